"""``segkit evaluate`` through segkit.cli.main: folder form, checkpoint form, argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segkit.cli import main
from segkit.data.io import write_mask
from segkit.evaluation import evaluate as evaluate_module
from segkit.evaluation.metrics import METRIC_KEYS, compute_metrics
from segkit.prediction.tiling import TileConfig


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    true = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]], dtype=np.uint8)
    write_mask(tmp_path / "pred" / "a.png", pred)
    write_mask(tmp_path / "true" / "a.png", true)
    write_mask(tmp_path / "pred" / "b.png", pred[:, ::-1].copy())
    write_mask(tmp_path / "true" / "b.png", true[:, ::-1].copy())
    return tmp_path / "pred", tmp_path / "true"


def test_folders_table_and_json(folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("background\nroad\ncar\nboat\n")
    out = tmp_path / "report" / "metrics.json"
    pred, true = folders
    options = ["--classes", str(classes), "--json", str(out)]
    assert main(["evaluate", "--pred", str(pred), "--true", str(true), *options]) == 0
    printed = capsys.readouterr().out
    assert "road" in printed and "mIoU" in printed
    assert "1 classes absent from truth and prediction, left out of the means: boat" in printed
    metrics = json.loads(out.read_text())
    assert set(metrics) == set(METRIC_KEYS)
    assert metrics["num_images"] == 2 and metrics["num_pixels"] == 14
    assert metrics["pixel_accuracy"] == pytest.approx(10 / 14)
    assert metrics["per_class"]["boat"]["iou"] is None


@pytest.mark.parametrize("spec", ["list.json", "background,road,car", "colours.json"])
def test_classes_take_every_list_format_like_train(folders: tuple[Path, Path], tmp_path: Path, spec: str) -> None:
    """A JSON list (once refused here while `train --classes` took it), a comma list, a colour table: same names."""
    (tmp_path / "list.json").write_text(json.dumps(["background", "road", "car"]))
    table = [{"name": name, "rgb": [i, i, i]} for i, name in enumerate(["background", "road", "car"])]
    (tmp_path / "colours.json").write_text(json.dumps({"classes": table}))
    argument = str(tmp_path / spec) if spec.endswith(".json") else spec
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(folders[0]),
                "--true",
                str(folders[1]),
                "--classes",
                argument,
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert list(json.loads(out.read_text())["per_class"]) == ["background", "road", "car"]


def test_ignore_index_option(folders: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    options = ["--ignore-index", "2", "--num-classes", "256", "--json", str(out)]
    assert main(["evaluate", "--pred", str(folders[0]), "--true", str(folders[1]), *options]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["num_classes"] == 256 and metrics["num_pixels"] == 12  # 255 counted, 2 ignored


def test_user_error_exits_2(folders: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    (folders[0] / "b.png").unlink()
    assert main(["evaluate", "--pred", str(folders[0]), "--true", str(folders[1])]) == 2
    assert f"segkit: error: {folders[1] / 'b.png'}: no prediction" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--pred", "p"],
        ["--true", "t"],
        ["model.pt"],
        ["model.pt", "data", "--pred", "p", "--true", "t"],
        ["model.pt", "--pred", "p", "--true", "t"],
        ["model.pt", "data", "--num-classes", "3"],
        ["--pred", "p", "--true", "t", "--masks", "masks_rgb"],
        ["--pred", "p", "--true", "t", "--tta", "flip"],
        ["--pred", "p", "--true", "t", "--tile", "64"],
        ["model.pt", "data", "--overlap", "1.5"],
    ],
)
def test_wrong_forms_are_parser_errors(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *argv])
    assert exit_info.value.code == 2
    assert "usage: segkit evaluate" in capsys.readouterr().err


def test_checkpoint_form_calls_evaluate_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    calls = []

    def evaluate_checkpoint(checkpoint, data, **options):
        calls.append((checkpoint, data, options))
        return compute_metrics(np.array([[3, 1], [0, 4]]), ["bg", "fg"], num_images=1)

    monkeypatch.setattr(evaluate_module, "evaluate_checkpoint", evaluate_checkpoint)
    out = tmp_path / "m.json"
    argv = ["evaluate", "model.pt", "data", "--batch-size", "2", "--device", "cpu", "--json", str(out)]
    assert main(argv) == 0
    ((checkpoint, data, options),) = calls
    assert (checkpoint, data) == (Path("model.pt"), Path("data"))
    assert options["ignore_index"] is None  # the checkpoint's own value, not 255
    assert options["batch_size"] == 2 and options["device"] == "cpu" and options["val_split"] is None
    assert str(options["tta"]) == "none" and options["crf"] is False and options["threshold"] is None
    assert options["tiling"] == TileConfig(batch_size=2) and options["on_image"] is None
    assert "fg" in capsys.readouterr().out
    assert json.loads(out.read_text())["pixel_accuracy"] == pytest.approx(7 / 8)
    calls.clear()
    data_options = ["--masks", "masks_rgb", "--colors", "c.json", "--classes", "a,b", "--split", "test"]
    prediction = ["--tta", "flip+scale", "--tile", "64x96", "--overlap", "0.5", "--threshold", "0.3"]
    assert main(["evaluate", "model.pt", "data", "--ignore-index", "7", *data_options, *prediction]) == 0
    ((_, _, options),) = calls
    assert options["ignore_index"] == 7 and options["masks"] == "masks_rgb" and options["colors"] == "c.json"
    assert options["classes"] == "a,b" and options["split"] == "test" and options["threshold"] == 0.3
    assert str(options["tta"]) == "flip+scale" and options["tiling"] == TileConfig((64, 96), auto=False, overlap=0.5)
