"""Data as people have it: any folder names, {id} file name patterns, region-of-interest masks, masks
smaller than their photos (``--images``, ``--masks``, ``--roi-masks``, ``--fit-masks``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_path, tiny_checkpoint
from PIL import Image

from segkit.checkpoint import save_checkpoint
from segkit.cli import main
from segkit.data.sources import open_source
from segkit.errors import SegkitError
from segkit.evaluation.evaluate import evaluate_checkpoint
from segkit.prediction.predictor import Predictor


def vessels(index: int, size: tuple[int, int] = (40, 48)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An RGB photo, a 0/255 vessel mask and a 0/255 field-of-view disk (DRIVE's kinds of files)."""
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    vessel = (np.abs(cols - (width // 3 + index)) <= 1) | (np.abs(rows - height // 2) <= 1)
    view = (rows - height / 2) ** 2 + (cols - width / 2) ** 2 <= (min(height, width) / 2.2) ** 2
    image = np.stack([np.full((height, width), 150), np.where(vessel, 40, 160), np.full((height, width), 90)], 2)
    return image.astype(np.uint8), vessel.astype(np.uint8) * 255, view.astype(np.uint8) * 255


def drive_like(root: Path, count: int = 4, split: str = "training") -> Path:
    """DRIVE's published layout: images/21_training.tif, 1st_manual/21_manual1.gif, mask/21_training_mask.gif."""
    for folder in ("images", "1st_manual", "mask"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, vessel, view = vessels(index)
        key = f"{21 + index}"
        Image.fromarray(image).save(root / "images" / f"{key}_{split}.tif")
        Image.fromarray(vessel).save(root / "1st_manual" / f"{key}_manual1.gif")
        Image.fromarray(view).save(root / "mask" / f"{key}_{split}_mask.gif")
    return root


PATTERNS = ["--images", "images/{id}_training.tif", "--masks", "1st_manual/{id}_manual1.gif"]
ROI = ["--roi-masks", "mask/{id}_training_mask.gif"]


def test_patterns_pair_differently_named_files_by_id(tmp_path: Path) -> None:
    data = drive_like(tmp_path / "drive")
    source = open_source(data, images="images/{id}_training.tif", masks="1st_manual/{id}_manual1.gif")
    assert [ref.name for ref in source.samples] == ["21", "22", "23", "24"]
    assert len(source.classes) == 2  # Pillow writes the 0/255 GIFs with a 2-colour palette: indices 0 and 1
    sample = source.load(0)
    assert sample.image.shape == (40, 48, 3) and set(np.unique(sample.mask)) == {0, 1}


def test_region_masks_ignore_what_lies_outside(tmp_path: Path) -> None:
    data = drive_like(tmp_path / "drive")
    source = open_source(
        data,
        images="images/{id}_training.tif",
        masks="1st_manual/{id}_manual1.gif",
        roi_masks="mask/{id}_training_mask.gif",
    )
    _, vessel, view = vessels(0)
    mask = source.load(0).mask
    assert (mask[view == 0] == 255).all()
    np.testing.assert_array_equal(mask[view > 0], (vessel[view > 0] > 0).astype(np.uint8))
    (data / "mask" / "22_training_mask.gif").unlink()
    source = open_source(data, images="images/{id}_training.tif", masks="1st_manual/{id}_manual1.gif", roi_masks="mask/{id}_training_mask.gif")  # fmt: skip
    assert [ref.name for ref in source.samples] == ["21", "23", "24"]
    assert any("without region mask" in problem.problem for problem in source.problems)


def test_a_pattern_that_finds_nothing_says_which_option(tmp_path: Path) -> None:
    data = drive_like(tmp_path / "drive")
    with pytest.raises(SegkitError, match="--images names a folder or an {id} pattern"):
        open_source(data, images="photos/{id}.tif", masks="1st_manual/{id}_manual1.gif")
    with pytest.raises(SegkitError, match="no region-of-interest masks found"):
        open_source(data, images="images/{id}_training.tif", masks="1st_manual/{id}_manual1.gif", roi_masks="fov/{id}.gif")  # fmt: skip


def human_like(root: Path, count: int = 6) -> Path:
    """Training_Images/ photos and Ground_Truth/ masks, most of them at half the photo's size."""
    (root / "Training_Images").mkdir(parents=True)
    (root / "Ground_Truth").mkdir(parents=True)
    for index in range(count):
        height, width = 48, 64
        rows, cols = np.mgrid[0:height, 0:width]
        person = (np.abs(cols - width / 2 - index) < 10) & (rows > 8)
        image = np.where(person[..., None], [220, 170, 140], [40, 90, 40]).astype(np.uint8)
        Image.fromarray(image).save(root / "Training_Images" / f"{index + 1}.jpg", quality=95)
        mask = Image.fromarray(person.astype(np.uint8) * 255)
        if index % 3:  # a scaled copy: same aspect ratio, half the size
            mask = mask.resize((width // 2, height // 2), Image.Resampling.NEAREST)
        mask.save(root / "Ground_Truth" / f"{index + 1}.png")
    return root


def test_scaled_masks_are_named_with_the_fix_and_fitted_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = human_like(tmp_path / "people")
    folders = ["--images", "Training_Images", "--masks", "Ground_Truth"]
    assert main(["inspect", str(data), *folders]) == 0
    out = capsys.readouterr().out
    assert "4 masks are scaled copies of their images: add --fit-masks" in out
    assert main(["inspect", str(data), *folders, "--fit-masks", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_pairs"] == 6 and report["problems"] == [] and report["scaled_masks"] == 0
    source = open_source(data, images="Training_Images", masks="Ground_Truth")
    with pytest.raises(SegkitError, match=r"mask is 32x24 but its image is 64x48 \(a scaled copy .*--fit-masks"):
        source.load(1)
    fitted = open_source(data, images="Training_Images", masks="Ground_Truth", fit_masks=True).load(1)
    assert fitted.mask.shape == (48, 64) and set(np.unique(fitted.mask)) == {0, 1}


def test_other_size_mismatches_stay_errors(tmp_path: Path) -> None:
    data = human_like(tmp_path / "people", count=2)
    Image.new("L", (50, 10)).save(data / "Ground_Truth" / "1.png")  # another aspect ratio
    source = open_source(data, images="Training_Images", masks="Ground_Truth", fit_masks=True)
    with pytest.raises(SegkitError, match="mask is 50x10 but its image is 64x48$"):
        source.load(0)


@pytest.mark.slow
def test_train_and_evaluate_on_published_layouts_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    people = human_like(tmp_path / "people")
    tiny = ["--model-kwargs", "base_channels=4,depth=2", "--img-size", "32", "--device", "cpu", "--no-plan"]
    folders = ["--images", "Training_Images", "--masks", "Ground_Truth", "--fit-masks"]
    run = tmp_path / "run"
    assert main(["train", str(people), *folders, *tiny, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["evaluate", str(run / "best.pt"), str(people), *folders, "--device", "cpu"]) == 0
    assert "mIoU" in capsys.readouterr().out

    drive = drive_like(tmp_path / "drive")
    run = tmp_path / "drive-run"
    assert main(["train", str(drive), *PATTERNS, *ROI, *tiny, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["report", str(run), "--device", "cpu"]) == 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "held out" in html  # the run's validation images, read through its patterns


def independent_f1(predictions: list[np.ndarray], truths: list[np.ndarray], views: list[np.ndarray]) -> float:
    """Vessel F1 over the pixels inside the field of view, counted directly."""
    inside = np.concatenate([view.ravel() > 0 for view in views])
    predicted = np.concatenate([p.ravel() == 1 for p in predictions])[inside]
    true = np.concatenate([t.ravel() > 0 for t in truths])[inside]
    hits = np.sum(predicted & true)
    return 2 * hits / (predicted.sum() + true.sum())


def test_drive_f1_inside_the_field_of_view_matches_an_independent_count(shared_datasets: Path, tmp_path: Path) -> None:
    test = dataset_path(shared_datasets, "drive", "test")
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(tiny_checkpoint(["background", "vessel"], binary=True, seed=3, zero_head_bias=True), checkpoint)
    options = {
        "images": "images/{id}_test.tif",
        "masks": "1st_manual/{id}_manual1.gif",
        "roi_masks": "mask/{id}_test_mask.gif",
    }
    metrics = evaluate_checkpoint(checkpoint, test, device="cpu", **options)
    source = open_source(test, images=options["images"], masks=options["masks"])
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    predictions, truths, views = [], [], []
    for ref in source.samples:
        image = np.asarray(Image.open(ref.image_file).convert("RGB"))
        predictions.append(predictor.predict(image))
        truths.append(np.asarray(Image.open(ref.label_file)))
        views.append(np.asarray(Image.open(test / "mask" / f"{ref.name}_test_mask.gif")))
    assert len(predictions) == 20
    assert metrics["per_class"]["vessel"]["dice"] == pytest.approx(independent_f1(predictions, truths, views), abs=1e-6)


def test_human_segmentation_reads_as_published(shared_datasets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = dataset_path(shared_datasets, "human_segmentation")
    folders = ["--images", "Training_Images", "--masks", "Ground_Truth", "--json"]
    assert main(["inspect", str(data), *folders]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scaled_masks"] > 0 and report["scaled_masks"] == len(report["problems"])
    assert main(["inspect", str(data), *folders, "--fit-masks"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_pairs"] == 290 and report["problems"] == [] and report["classes"][0] == "background"


def bad_files_dataset(root: Path) -> Path:
    """Six good pairs, one truncated photo and one mask of another aspect ratio."""
    people = human_like(root, count=8)
    (people / "Ground_Truth").rename(people / "masks")
    (people / "Training_Images").rename(people / "images")
    for index in range(1, 9):  # every mask at the photo's size
        mask = Image.open(people / "masks" / f"{index}.png")
        mask.resize((64, 48), Image.Resampling.NEAREST).save(people / "masks" / f"{index}.png")
    (people / "images" / "3.jpg").write_bytes((people / "images" / "3.jpg").read_bytes()[:40])
    Image.new("L", (30, 5)).save(people / "masks" / "6.png")
    return people


def test_every_unusable_file_is_said_at_once_or_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from segkit.data.sources import usable

    data = bad_files_dataset(tmp_path / "data")
    source = open_source(data)
    with pytest.raises(SegkitError) as error:
        usable(source)
    message = str(error.value)
    assert "3.jpg" in message and "1 more: masks/6.png: mask is 30x5 but its image is 64x48" in message
    assert "--skip-bad leaves such samples out" in message
    with caplog.at_level("WARNING"):
        kept = usable(source, skip_bad=True)
    assert len(kept) == 6 and "--skip-bad: 2 of 8 samples left out" in caplog.text
    tiny = ["--model-kwargs", "base_channels=4,depth=2", "--img-size", "32", "--device", "cpu", "--no-plan"]
    run = tmp_path / "run"
    assert main(["train", str(data), *tiny, "--epochs", "1", "--out", str(run)]) == 2
    assert "or --skip-bad leaves such samples out" in capsys.readouterr().err and not (run / "best.pt").exists()
    assert main(["train", str(data), *tiny, "--epochs", "1", "--out", str(run), "--skip-bad"]) == 0
    assert main(["evaluate", str(run / "best.pt"), str(data), "--device", "cpu"]) == 2
    assert "3.jpg" in capsys.readouterr().err


def test_predict_blacks_out_what_lies_outside_the_regions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = drive_like(tmp_path / "drive", count=2, split="test")
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(tiny_checkpoint(["background", "vessel"], binary=True, seed=3), checkpoint)
    out = tmp_path / "out"
    images = str(data / "images")
    roi = str(data / "mask" / "{id}_mask.gif")
    assert main(["predict", str(checkpoint), images, "--out", str(out), "--roi-masks", roi, "--threshold", "0"]) == 0
    _, _, view = vessels(0)
    predicted = np.asarray(Image.open(out / "21_test.png"))
    assert (predicted[view == 0] == 0).all() and (predicted[view > 0] == 1).all()  # threshold 0: all vessel inside
    (data / "mask" / "22_test_mask.gif").unlink()
    assert main(["predict", str(checkpoint), images, "--out", str(tmp_path / "o2"), "--roi-masks", roi]) == 2
    assert "22_test.tif: no region mask in" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_convert_masks_writes_a_fixed_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    people = human_like(tmp_path / "people")
    fixed = tmp_path / "fixed"
    argv = ["convert", "masks", str(people), str(fixed), "--images", "Training_Images", "--masks", "Ground_Truth"]
    assert main([*argv, "--fit-masks"]) == 0
    assert sorted(path.name for path in (fixed / "images").iterdir()) == [f"{index}.jpg" for index in range(1, 7)]
    for index in range(1, 7):
        mask = Image.open(fixed / "masks" / f"{index}.png")
        assert mask.size == (64, 48) and set(np.unique(np.asarray(mask))) <= {0, 1}
    capsys.readouterr()
    assert main(["inspect", str(fixed), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_pairs"] == 6 and report["problems"] == []
    other = [*argv[:3], str(tmp_path / "other"), *argv[4:]]
    assert main(other) == 2  # without --fit-masks: the scaled masks are named, nothing is written
    assert "--fit-masks" in capsys.readouterr().err and not (tmp_path / "other").exists()


@pytest.mark.slow
def test_real_human_segmentation_and_drive_train_and_evaluate_as_published(
    shared_datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's promise: no renaming, no resizing by hand, DRIVE scored inside its field of view."""
    people = dataset_path(shared_datasets, "human_segmentation")
    drive = dataset_path(shared_datasets, "drive")
    tiny = ["--model-kwargs", "base_channels=4,depth=2", "--img-size", "32", "--device", "cpu", "--no-plan"]
    folders = ["--images", "Training_Images", "--masks", "Ground_Truth", "--fit-masks"]
    run = tmp_path / "people"
    assert main(["train", str(people), *folders, *tiny, "--epochs", "1", "--out", str(run)]) == 0
    assert (
        main(
            [
                "evaluate",
                str(run / "best.pt"),
                str(people),
                *folders,
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "p.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "p.json").read_text())["num_images"] == 58  # the 20 % the run held out
    train = [
        "--images",
        "images/{id}_training.tif",
        "--masks",
        "1st_manual/{id}_manual1.gif",
        "--roi-masks",
        "mask/{id}_training_mask.gif",
    ]
    run = tmp_path / "drive"
    assert main(["train", str(drive / "training"), *train, *tiny, "--epochs", "1", "--out", str(run)]) == 0
    test = [
        "--images",
        "images/{id}_test.tif",
        "--masks",
        "1st_manual/{id}_manual1.gif",
        "--roi-masks",
        "mask/{id}_test_mask.gif",
    ]
    assert (
        main(
            [
                "evaluate",
                str(run / "best.pt"),
                str(drive / "test"),
                *test,
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "d.json"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "d.json").read_text())
    # 20 images of 565 x 584: the pixels outside the field of view (about a third) are not scored
    assert metrics["num_images"] == 20 and metrics["num_pixels"] < 0.8 * 20 * 565 * 584
