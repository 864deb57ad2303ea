"""evaluate_folders end to end on small PNG folders and on the real datasets."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_path
from PIL import Image

from segkit.data.io import read_mask_file, write_mask
from segkit.errors import SegkitError
from segkit.evaluation.confusion import confusion_matrix
from segkit.evaluation.folders import evaluate_folders
from segkit.visualize import PALETTE


def write_pairs(root: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[Path, Path]:
    """pred/<stem>.png (L) and true/<stem>.png (palette PNG) for each (pred, true) pair."""
    for folder in ("pred", "true"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for stem, (pred, true) in pairs.items():
        write_mask(root / "pred" / f"{stem}.png", pred)
        write_mask(root / "true" / f"{stem}.png", true, palette=PALETTE)
    return root / "pred", root / "true"


def random_pairs(seed: int, count: int, num_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = {}
    for index in range(count):
        shape = (int(rng.integers(8, 20)), int(rng.integers(8, 20)))  # sizes differ between pairs
        true = rng.integers(0, num_classes, shape).astype(np.uint8)
        true[rng.random(shape) < 0.1] = 255
        pred = np.where(rng.random(shape) < 0.7, true % 255, rng.integers(0, num_classes, shape)).astype(np.uint8)
        pairs[f"img_{index:02d}"] = (pred, true)
    return pairs


def test_matches_confusion_matrix_of_all_pixels(tmp_path: Path) -> None:
    pairs = random_pairs(0, 7, 5)
    pred_dir, true_dir = write_pairs(tmp_path, pairs)
    (pred_dir / "extra.png").write_bytes((pred_dir / "img_00.png").read_bytes())  # no truth: skipped
    metrics = evaluate_folders(pred_dir, true_dir, workers=3)
    expected = sum(confusion_matrix(pred, true, 5) for pred, true in pairs.values())
    assert metrics["confusion_matrix"] == expected.tolist()
    assert metrics["num_images"] == 7 and metrics["num_classes"] == 5


def test_class_names_file_and_other_truth_formats(tmp_path: Path) -> None:
    pred_dir, true_dir = write_pairs(tmp_path, {})
    true = np.array([[0, 1, 2], [2, 255, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [2, 0, 1]], dtype=np.uint8)
    write_mask(pred_dir / "a.png", pred, palette=PALETTE)
    Image.fromarray(true).save(true_dir / "a.bmp")  # truth may have any image extension
    names = tmp_path / "labels.txt"
    names.write_text("__ignore__\nbackground\n\nroad\ncar\nboat\n")
    metrics = evaluate_folders(pred_dir, true_dir, class_names=names)
    assert list(metrics["per_class"]) == ["background", "road", "car", "boat"]
    assert metrics["classes_absent"] == ["boat"]
    assert metrics["confusion_matrix"] == confusion_matrix(pred, true, 4).tolist()
    with pytest.raises(SegkitError, match="4 class names for num_classes=3"):
        evaluate_folders(pred_dir, true_dir, class_names=names, num_classes=3)


@pytest.mark.parametrize("pred_scale", [1, 255])
def test_binary_0_255_truth(tmp_path: Path, caplog: pytest.LogCaptureFixture, pred_scale: int) -> None:
    rng = np.random.default_rng(1)
    true = (rng.random((12, 10)) < 0.4).astype(np.uint8)
    pred = (rng.random((12, 10)) < 0.4).astype(np.uint8)
    pred_dir, true_dir = write_pairs(tmp_path, {"m": (pred * pred_scale, true * 255)})
    with caplog.at_level(logging.INFO, logger="segkit.evaluation.folders"):
        metrics = evaluate_folders(pred_dir, true_dir)
    assert "reading 255 as class 1" in caplog.text
    assert metrics["num_classes"] == 2 and metrics["num_pixels"] == true.size  # 255 is a class, not ignore
    assert metrics["confusion_matrix"] == confusion_matrix(pred, true, 2).tolist()


def test_255_stays_ignore_in_multiclass_truth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    true = np.array([[0, 255, 2], [1, 0, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 2], [1, 1, 7]], dtype=np.uint8)  # 7 sits on an ignored pixel
    pred_dir, true_dir = write_pairs(tmp_path, {"m": (pred, true)})
    with caplog.at_level(logging.INFO, logger="segkit.evaluation.folders"):
        metrics = evaluate_folders(pred_dir, true_dir)
    assert "binary" not in caplog.text
    assert metrics["num_classes"] == 3 and metrics["num_pixels"] == 4


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    pred_dir, true_dir = write_pairs(tmp_path, {"a": (np.zeros((4, 6), np.uint8), np.zeros((4, 5), np.uint8))})
    with pytest.raises(SegkitError, match="size 6x4 differs from") as error:
        evaluate_folders(pred_dir, true_dir)
    assert str(pred_dir / "a.png") in str(error.value) and str(true_dir / "a.png") in str(error.value)


def test_missing_prediction_names_the_truth_file(tmp_path: Path) -> None:
    pairs = random_pairs(2, 3, 3)
    pred_dir, true_dir = write_pairs(tmp_path, pairs)
    (pred_dir / "img_01.png").unlink()
    (pred_dir / "img_02.png").unlink()
    with pytest.raises(SegkitError, match=r"img_01\.png: no prediction img_01\.\* in .* \(and 1 more true masks\)"):
        evaluate_folders(pred_dir, true_dir)


def test_bad_values_name_the_file(tmp_path: Path) -> None:
    true = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    pred_dir, true_dir = write_pairs(tmp_path, {"a": (np.array([[0, 1], [3, 0]], np.uint8), true)})
    with pytest.raises(SegkitError, match=r"a\.png: predicted values \[3\] at labelled pixels are not classes 0\.\.2"):
        evaluate_folders(pred_dir, true_dir, num_classes=3)
    with pytest.raises(SegkitError, match=r"true.a\.png: values \[2\] are neither classes 0\.\.1"):
        evaluate_folders(pred_dir, true_dir, class_names=["bg", "fg"])


def test_colour_and_unreadable_masks(tmp_path: Path) -> None:
    pred_dir, true_dir = write_pairs(tmp_path, {"a": (np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))})
    grey = np.repeat(np.array([[0, 1, 1]] * 3, dtype=np.uint8)[..., None], 3, axis=2)
    Image.fromarray(grey).save(pred_dir / "a.png")  # grey RGB: read as indices
    assert evaluate_folders(pred_dir, true_dir, num_classes=2)["confusion_matrix"] == [[3, 6], [0, 0]]
    grey[0, 0] = (255, 0, 0)
    Image.fromarray(grey).save(pred_dir / "a.png")
    with pytest.raises(SegkitError, match="colour RGB mask"):
        evaluate_folders(pred_dir, true_dir)
    (pred_dir / "a.png").write_bytes(b"not a png")
    with pytest.raises(SegkitError, match="a.png: not a readable image"):
        evaluate_folders(pred_dir, true_dir)


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegkitError, match="nope: folder not found"):
        evaluate_folders(tmp_path / "nope", tmp_path / "empty")
    with pytest.raises(SegkitError, match="no mask files"):
        evaluate_folders(tmp_path / "empty", tmp_path / "empty")
    pred_dir, true_dir = write_pairs(tmp_path, {"a": (np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8))})
    with pytest.raises(SegkitError, match="every true pixel is the ignore value 255"):
        evaluate_folders(pred_dir, true_dir, num_classes=3)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(true_dir / "a.jpg")
    with pytest.raises(SegkitError, match=r"another file has the same name \(a\.(png|jpg)\)"):
        evaluate_folders(pred_dir, true_dir)


def test_class_lists_as_every_command_reads_them(tmp_path: Path) -> None:
    """``--classes`` here is segkit.data.classes.read_class_list: comma lists, JSON lists, text files."""
    pred_dir, true_dir = write_pairs(tmp_path, {"a": (np.array([[0, 1]], np.uint8), np.array([[0, 2]], np.uint8))})
    (tmp_path / "names.json").write_text('["bg", "road", "car"]')
    for spec in ("bg,road,car", tmp_path / "names.json", ["bg", "road", "car"]):
        assert list(evaluate_folders(pred_dir, true_dir, class_names=spec)["per_class"]) == ["bg", "road", "car"]
    with pytest.raises(SegkitError, match="not found"):
        evaluate_folders(pred_dir, true_dir, class_names=tmp_path / "missing.txt")
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(SegkitError, match="dup.txt"):
        evaluate_folders(pred_dir, true_dir, class_names=tmp_path / "dup.txt")


def test_real_binary_dataset(shared_datasets: Path, tmp_path: Path) -> None:
    """ISBI 2012 masks are 0/255 (255 = cell); predictions 0/1, the truth shifted by 3 px."""
    masks = dataset_path(shared_datasets, "isbi2012_membrane", "train", "masks")
    expected = 0
    for path in sorted(masks.glob("*.png"))[:4]:
        (tmp_path / "true").mkdir(exist_ok=True)
        (tmp_path / "true" / path.name).write_bytes(path.read_bytes())
        true = read_mask_file(path)[0] // 255
        pred = np.roll(true, 3, axis=1)
        write_mask(tmp_path / "pred" / path.name, pred)
        expected = expected + confusion_matrix(pred, true, 2)
    metrics = evaluate_folders(tmp_path / "pred", tmp_path / "true", class_names=["membrane", "cell"])
    assert metrics["confusion_matrix"] == expected.tolist()
    assert 0.5 < metrics["mIoU"] < 1.0 and metrics["classes_absent"] == []


def test_real_multiclass_dataset_against_itself(shared_datasets: Path) -> None:
    masks = dataset_path(shared_datasets, "dubai_aerial", "masks")
    classes = dataset_path(shared_datasets, "dubai_aerial", "classes.json")
    metrics = evaluate_folders(masks, masks, class_names=classes)
    assert metrics["num_images"] == 72 and metrics["num_classes"] == 6
    assert metrics["mIoU"] == 1.0 and metrics["pixel_accuracy"] == 1.0 and metrics["classes_absent"] == []
    assert list(metrics["per_class"])[:3] == ["Building", "Land (unpaved area)", "Road"]
