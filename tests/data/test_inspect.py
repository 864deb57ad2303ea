"""Dataset reports: counts, shares, problems, the `segkit inspect` command, real data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_path
from PIL import Image

from segkit.cli import main
from segkit.data.inspect import format_report, inspect_source
from segkit.data.sources import open_source

REPORT_KEYS = {
    "root", "layout", "split", "split_roles", "num_pairs", "num_classes", "classes", "classes_origin", "encoding",
    "ignore_index", "image_sizes", "image_modes", "num_mask_pixels", "class_pixel_share", "class_image_count",
    "ignore_pixel_share", "problems", "scaled_masks", "label_map_suggestion", "labelme_images",
}  # fmt: skip


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    """Two pairs: a 4x2 RGB image with mask [[0,0,1,1],[0,255,1,1]], a 2x2 gray image all class 2."""
    root = tmp_path / "clean"
    save(root / "images" / "a.png", np.zeros((2, 4, 3), np.uint8))
    save(root / "masks" / "a.png", np.array([[0, 0, 1, 1], [0, 255, 1, 1]], np.uint8))
    save(root / "images" / "b.jpg", np.zeros((2, 2), np.uint8))
    save(root / "masks" / "b.png", np.full((2, 2), 2, np.uint8))
    (root / "class_names.txt").write_text("bg\none\ntwo\n")
    return root


def test_report_counts_and_shares(clean: Path) -> None:
    report = inspect_source(open_source(clean))
    assert set(report) == REPORT_KEYS
    assert json.loads(json.dumps(report)) == report
    assert (report["num_pairs"], report["layout"], report["encoding"]) == (2, "folders", "index")
    assert report["classes"] == ["bg", "one", "two"] and report["num_classes"] == 3
    assert report["image_sizes"] == {"min": [2, 2], "median": [3, 2], "max": [4, 2]}
    assert report["image_modes"] == {"L": 1, "RGB": 1}
    assert report["num_mask_pixels"] == 12
    assert report["class_pixel_share"] == {"bg": 3 / 12, "one": 4 / 12, "two": 4 / 12}
    assert report["ignore_pixel_share"] == 1 / 12
    assert report["class_image_count"] == {"bg": 1, "one": 1, "two": 1}
    assert report["problems"] == []
    assert (report["classes_origin"], report["split_roles"]) == ("class_names.txt", None)
    text = format_report(report)
    assert "pairs     2" in text and "problems  0" in text and "classes   3 (from class_names.txt)" in text
    assert "splits" not in text
    assert "min 2x2, median 3x2, max 4x2" in text
    assert "      2  two          33.333       1" in text
    assert "    255  (ignore)      8.333" in text


def test_problems_are_collected_and_the_pass_goes_on(clean: Path) -> None:
    save(clean / "images" / "no_mask.png", np.zeros((2, 2, 3), np.uint8))
    save(clean / "masks" / "no_image.png", np.zeros((2, 2), np.uint8))
    save(clean / "images" / "wrong_size.png", np.zeros((3, 3, 3), np.uint8))
    save(clean / "masks" / "wrong_size.png", np.zeros((2, 2), np.uint8))
    save(clean / "images" / "empty_mask.png", np.zeros((2, 2, 3), np.uint8))
    (clean / "masks" / "empty_mask.png").write_bytes(b"")
    (clean / "images" / "junk.png").write_bytes(b"this is not a png")
    save(clean / "masks" / "junk.png", np.zeros((2, 2), np.uint8))
    save(clean / "images" / "bad_values.png", np.zeros((2, 2, 3), np.uint8))
    save(clean / "masks" / "bad_values.png", np.array([[0, 7], [9, 1]], np.uint8))
    report = inspect_source(open_source(clean))
    problems = {Path(item["file"]).relative_to(clean).as_posix(): item["problem"] for item in report["problems"]}
    assert problems == {
        "images/no_mask.png": "image without mask",
        "masks/no_image.png": "mask without image",
        "masks/wrong_size.png": "mask is 2x2 but its image is 3x3 (a scaled copy of it: --fit-masks resizes such masks)",
        "masks/empty_mask.png": "file is empty (0 bytes)",
        "images/junk.png": "not a readable image (UnidentifiedImageError)",
        "masks/bad_values.png": "values [7, 9] out of range for 3 classes (ignore value 255)",
    }
    assert report["num_pairs"] == 6
    # Counted: a, b, wrong_size (its mask is valid) and junk's mask; not the empty or bad-valued masks.
    assert report["num_mask_pixels"] == 8 + 4 + 4 + 4
    assert report["class_image_count"]["bg"] == 3
    assert "problems  6" in format_report(report)


def test_labelme_report(tmp_path: Path) -> None:
    pytest.importorskip("segkit.data.labelme")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "x.jpg")
    shape = {"label": "leaf", "points": [[0, 0], [1, 3]], "shape_type": "rectangle"}
    data = {"shapes": [shape], "imagePath": "x.jpg", "imageData": None, "imageHeight": 4, "imageWidth": 4}
    (tmp_path / "x.json").write_text(json.dumps(data))
    (tmp_path / "broken.json").write_text("{")
    report = inspect_source(open_source(tmp_path))
    assert (report["layout"], report["num_pairs"], report["classes"]) == ("labelme", 2, ["_background_", "leaf"])
    assert report["class_pixel_share"] == {"_background_": 0.5, "leaf": 0.5}
    assert report["image_modes"] == {"RGB": 1}
    assert [item["file"] for item in report["problems"]] == [str(tmp_path / "broken.json")]


def test_cli_json_and_table(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (clean / "masks" / "b.png").write_bytes(b"")
    assert main(["inspect", str(clean), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == REPORT_KEYS and len(report["problems"]) == 1
    assert main(["inspect", str(clean), "--classes", "x,y,z,w"]) == 0
    out = capsys.readouterr().out
    assert "      3  w " in out and "problems  1" in out
    assert main(["inspect", str(clean), "--json", "--classes", "x,y", "--ignore-index", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ignore_index"], report["classes"]) == (2, ["x", "y"])
    assert "values [255] out of range for 2 classes (ignore value 2)" in report["problems"][1]["problem"]


def test_splits_and_class_origin_are_reported(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = clean  # images/ and masks/ move into train/ (and a copy into valid/); class_names.txt stays
    (data / "train").mkdir()
    for item in ("images", "masks"):
        (data / item).rename(data / "train" / item)
    shutil.copytree(data / "train", data / "valid")
    assert main(["inspect", str(data), "--classes", "x,y,z"]) == 0
    out = capsys.readouterr().out
    assert "(folders, split train)" in out and "splits    train: train, validation: valid" in out
    assert "classes   3 (from --classes)" in out
    assert main(["inspect", str(data), "--json", "--split", "valid"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split_roles"] == {"train": "train", "validation": "valid", "test": None}
    assert (report["split"], report["classes_origin"]) == ("valid", "class_names.txt")


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "missing: not found" in capsys.readouterr().err
    (tmp_path / "train").mkdir()
    assert main(["inspect", str(tmp_path), "--split", "val"]) == 2
    assert "available splits: train" in capsys.readouterr().err


# ---------------------------------------------------------------- real data


def test_real_isbi(shared_datasets: Path) -> None:
    report = inspect_source(open_source(dataset_path(shared_datasets, "isbi2012_membrane", "train")))
    assert (report["num_pairs"], report["num_classes"], report["encoding"]) == (30, 2, "binary-0-255")
    assert report["problems"] == [] and report["image_modes"] == {"L": 30}
    assert report["class_pixel_share"]["foreground"] == pytest.approx(0.78, abs=0.01)  # cell interior (255)


def test_real_crackforest(shared_datasets: Path) -> None:
    report = inspect_source(open_source(dataset_path(shared_datasets, "crackforest")))
    assert (report["num_pairs"], report["num_classes"], report["encoding"]) == (118, 2, "index")
    assert report["class_pixel_share"]["class_1"] == pytest.approx(0.016, abs=0.002)
    assert report["image_sizes"]["max"] == [480, 320]


def test_real_dubai_rgb_masks_match_index_masks(shared_datasets: Path) -> None:
    dubai = dataset_path(shared_datasets, "dubai_aerial")
    source = open_source(dubai, masks="masks_rgb", colors=dubai / "classes.json")
    report = inspect_source(source)
    assert (report["num_pairs"], report["num_classes"], report["encoding"]) == (72, 6, "rgb")
    assert report["problems"] == [] and report["ignore_pixel_share"] > 0
    counts = np.zeros(256, np.int64)  # the same shares straight from the index masks/
    for path in sorted((dubai / "masks").glob("*.png")):
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=256)
    assert report["num_mask_pixels"] == counts.sum()
    assert report["ignore_pixel_share"] == pytest.approx(counts[255] / counts.sum(), abs=1e-12)
    assert list(report["class_pixel_share"].values()) == pytest.approx((counts[:6] / counts.sum()).tolist(), abs=1e-12)
