"""``evaluate_checkpoint`` / ``segkit evaluate CHECKPOINT DATA``: the data options of train, the prediction options of predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_checkpoint
from PIL import Image
from prediction.test_predictor import squares

from segkit.checkpoint import save_checkpoint
from segkit.cli import main
from segkit.evaluation.confusion import ConfusionMatrix
from segkit.evaluation.evaluate import evaluate_checkpoint
from segkit.prediction.predictor import Predictor

CLASSES = ["road", "car", "tree"]  # class 0 is no background
COLOURS = [(128, 64, 128), (0, 0, 142), (107, 142, 35)]


def colour_dataset(root: Path, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """images/ + masks_rgb/ (colour-coded, black = ignored) + classes.json with the colours; and a wrong masks/.

    Returns the index masks the colours encode.
    """
    for folder in ("images", "masks", "masks_rgb"):
        (root / folder).mkdir(parents=True)
    table = [
        {"name": name, "rgb": list(rgb), "index": index} for index, (name, rgb) in enumerate(zip(CLASSES, COLOURS))
    ]
    table.append({"name": "unlabelled", "rgb": [0, 0, 0], "index": 255})
    (root / "classes.json").write_text(json.dumps({"classes": table}))
    truths = []
    for index, (height, width) in enumerate(sizes):
        image, mask = squares(height, width)
        mask[: height // 10] = 255
        colours = np.zeros((height, width, 3), np.uint8)
        for value, rgb in enumerate(COLOURS):
            colours[mask == value] = rgb
        Image.fromarray(image).save(root / "images" / f"img{index}.png")
        Image.fromarray(colours).save(root / "masks_rgb" / f"img{index}.png")
        Image.fromarray(np.zeros_like(mask)).save(root / "masks" / f"img{index}.png")  # all class 0: not the truth
        truths.append(mask)
    return truths


def expected_matrix(predictor: Predictor, root: Path, truths: list[np.ndarray], ignore_index: int = 255) -> list:
    matrix = ConfusionMatrix(len(CLASSES), ignore_index=ignore_index)
    for index, truth in enumerate(truths):
        matrix.update(predictor.predict(root / "images" / f"img{index}.png"), truth)
    return matrix.matrix.tolist()


def test_masks_option_scores_against_the_colour_masks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    truths = colour_dataset(tmp_path / "data", [(40, 52), (33, 30)])
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(tiny_checkpoint(CLASSES, zero_head_bias=True), checkpoint)
    out = tmp_path / "metrics.json"
    argv = ["evaluate", str(checkpoint), str(tmp_path / "data"), "--masks", "masks_rgb", "--device", "cpu"]
    assert main([*argv, "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    assert metrics["confusion_matrix"] == expected_matrix(predictor, tmp_path / "data", truths)
    assert metrics["num_pixels"] == sum(int((truth != 255).sum()) for truth in truths)
    without = evaluate_checkpoint(checkpoint, tmp_path / "data", device="cpu")  # masks/: every pixel class 0
    assert np.asarray(without["confusion_matrix"])[1:].sum() == 0


def test_ignore_index_defaults_to_the_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = tiny_checkpoint(CLASSES)
    checkpoint.card.ignore_index = 7
    path = tmp_path / "best.pt"
    save_checkpoint(checkpoint, path)
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    (tmp_path / "data" / "classes.txt").write_text("\n".join(CLASSES))
    image, truth = squares(36, 44)
    truth[:6] = 7  # the checkpoint's unlabelled value
    Image.fromarray(image).save(tmp_path / "data" / "images" / "a.png")
    Image.fromarray(truth).save(tmp_path / "data" / "masks" / "a.png")
    out = tmp_path / "m.json"
    argv = ["evaluate", str(path), str(tmp_path / "data"), "--device", "cpu"]
    assert main([*argv, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["num_pixels"] == int((truth != 7).sum())
    assert main([*argv, "--ignore-index", "255"]) == 2  # said explicitly, 7 is then no class
    assert "values [7] out of range for 3 classes (ignore value 255)" in capsys.readouterr().err


def test_prediction_options_are_the_shipped_ones(tmp_path: Path) -> None:
    truths = colour_dataset(tmp_path / "data", [(50, 61), (29, 70)])
    checkpoint = tiny_checkpoint(CLASSES, resize="crop", img_size=16, zero_head_bias=True)
    options = {"tta": "flip", "threshold": None, "batch_size": 1}
    from segkit.prediction.tiling import TileConfig

    options["tiling"] = TileConfig((24, 24), auto=False, overlap=0.5, batch_size=2)
    metrics = evaluate_checkpoint(checkpoint, tmp_path / "data", device="cpu", masks="masks_rgb", **options)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", **options)
    assert metrics["confusion_matrix"] == expected_matrix(predictor, tmp_path / "data", truths)
    plain = evaluate_checkpoint(checkpoint, tmp_path / "data", device="cpu", masks="masks_rgb")
    assert plain["confusion_matrix"] != metrics["confusion_matrix"]  # the options really were applied


def test_json_and_report_never_overwrite_the_model_or_the_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    colour_dataset(tmp_path / "data", [(40, 52)])
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(tiny_checkpoint(CLASSES), checkpoint)
    before = {path: path.read_bytes() for path in [checkpoint, *sorted((tmp_path / "data").rglob("*.png"))]}
    argv = ["evaluate", str(checkpoint), str(tmp_path / "data"), "--masks", "masks_rgb", "--device", "cpu"]
    for target, option in (
        (checkpoint, "--json"),
        (tmp_path / "data" / "masks_rgb" / "img0.png", "--json"),
        (tmp_path / "data" / "report.html", "--report"),
    ):
        capsys.readouterr()
        assert main([*argv, option, str(target)]) == 2
        assert f"{option} is" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in before} == before
    assert not (tmp_path / "data" / "report.html").exists()


def test_evaluating_on_the_training_folder_scores_the_held_out_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's first session: `segkit evaluate best.pt data/` on the folder the model trained on."""
    from segkit.data.sources import open_source, split_by_name
    from segkit.evaluation.evaluate import evaluate

    def save_pairs(root: Path, count: int, prefix: str) -> None:
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for index in range(count):
            image, mask = squares(24 + 2 * index, 32)
            Image.fromarray(image).save(root / "images" / f"{prefix}{index}.png")
            Image.fromarray(mask).save(root / "masks" / f"{prefix}{index}.png")
        (root / "class_names.txt").write_text("background\nred\nblue\n")

    data = tmp_path / "data"
    save_pairs(data, 10, "img")
    checkpoint = tiny_checkpoint(["background", "red", "blue"], seed=1)
    checkpoint.card.training.epoch = 3
    checkpoint.card.training.config = {"data": str(data), "val_split": 0.3}
    path = tmp_path / "best.pt"
    save_checkpoint(checkpoint, path)
    names = [sample.name for sample in open_source(data).samples]
    with caplog.at_level("INFO"):
        metrics = evaluate(path, data, device="cpu")
    assert metrics["num_images"] == len(split_by_name(names, 0.3)[1]) == 3
    assert "scoring only the images the run held out for validation (--val-split 0.3" in caplog.text
    other = tmp_path / "other"
    save_pairs(other, 4, "x")
    assert evaluate(path, other, device="cpu")["num_images"] == 4  # other data: every image
    checkpoint.card.training.config = {}
    save_checkpoint(checkpoint, path)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert evaluate(path, data, device="cpu")["num_images"] == 10
    assert "does not say which images it trained on" in caplog.text
