"""The training loop: outputs, checkpoints, resume, schedules, early stopping, bad runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segkit.errors import SegkitError
from conftest import tiny_checkpoint
from segkit.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from segkit.training.config import TrainConfig, parse_duration
from segkit.training.schedule import lr_factor
from segkit.data.sources import split_by_name
from segkit.training.trainer import Trainer, train
from training.conftest import tiny_options


def test_run_writes_every_output(shapes_dataset: Path, tmp_path: Path) -> None:
    result = train(**tiny_options(shapes_dataset, tmp_path / "run"), progress=False)
    out = tmp_path / "run"
    for name in ("best.pt", "last.pt", "history.csv", "curves.png", "config.yaml", "metrics.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mIoU"] == pytest.approx(result.best_metrics["mIoU"])
    assert set(metrics) >= {"pixel_accuracy", "mean_class_accuracy", "mIoU", "fwIoU", "mDice", "per_class"}
    assert yaml.safe_load((out / "config.yaml").read_text())["model_kwargs"] == {"base_channels": 4, "depth": 2}


def test_checkpoint_carries_everything_and_loads_weights_only(shapes_dataset: Path, tmp_path: Path) -> None:
    train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=1), progress=False)
    raw = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert "resume" not in raw
    best = ModelCard.from_dict(raw["card"])
    assert best.model.to_dict() == {"name": "unet", "out_channels": 4, "in_channels": 3, "kwargs": {"base_channels": 4, "depth": 2}}
    assert best.classes == ["_background_", "disk", "square", "triangle"] and best.background == 0
    assert len(best.palette) == 4 and best.palette[0] == [0, 0, 0]
    assert best.preprocess.img_size == (32, 32) and best.preprocess.resize == "letterbox"
    assert best.ignore_index == 255 and best.binary is False and best.threshold == 0.5
    assert len(best.training.history) == 1
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(last["resume"])


def test_resume_continues_from_saved_epoch_with_optimizer_and_schedule(
    shapes_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = train(**tiny_options(shapes_dataset, tmp_path / "full", epochs=3), progress=False)

    original = Trainer._train_epoch

    def crash_in_epoch_3(self, epoch, start_time):
        if epoch == 3:
            raise KeyboardInterrupt("simulated crash")
        return original(self, epoch, start_time)

    monkeypatch.setattr(Trainer, "_train_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=3), progress=False)
    monkeypatch.setattr(Trainer, "_train_epoch", original)

    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    state = saved.resume
    assert saved.card.training.epoch == 2 and state["scheduler"]["steps_done"] > 0
    resumed = Trainer(
        TrainConfig(**tiny_options(shapes_dataset, tmp_path / "run", epochs=3, resume=str(tmp_path / "run" / "last.pt"))),
        progress=False,
    )
    assert resumed.start_epoch == 3
    assert resumed.steps_done == state["scheduler"]["steps_done"]
    assert resumed.optimizer.state_dict()["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
    result = resumed.fit()
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    # Epoch-seeded shuffling and augmentation: resuming reproduces the uninterrupted run.
    assert result.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-5)
    assert result.history[-1]["lr"] == pytest.approx(full.history[-1]["lr"])
    assert result.best_metrics["mIoU"] == pytest.approx(full.best_metrics["mIoU"], abs=1e-6)


def test_same_seed_gives_identical_metrics(shapes_dataset: Path, tmp_path: Path) -> None:
    first = train(**tiny_options(shapes_dataset, tmp_path / "a"), progress=False)
    second = train(**tiny_options(shapes_dataset, tmp_path / "b"), progress=False)
    assert [r["val_mIoU"] for r in first.history] == [r["val_mIoU"] for r in second.history]
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]


def test_refuses_to_overwrite_a_run(shapes_dataset: Path, tmp_path: Path) -> None:
    train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=1), progress=False)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(SegkitError, match="already holds a run"):
        train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=1), progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    shapes_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=1), progress=False)
    good = (tmp_path / "run" / "last.pt").read_bytes()
    original = Trainer._to_device

    def poisoned(self, images, masks):
        images, masks = original(self, images, masks)
        return images * float("nan"), masks

    monkeypatch.setattr(Trainer, "_to_device", poisoned)
    with pytest.raises(SegkitError, match="loss became nan"):
        train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=3, resume=str(tmp_path / "run" / "last.pt")), progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == good
    assert load_checkpoint(tmp_path / "run" / "last.pt").card.training.epoch == 1


def test_patience_stops_early(shapes_dataset: Path, tmp_path: Path) -> None:
    result = train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=8, lr=0.0, patience=1), progress=False)
    assert len(result.history) == 2 and "early stopping" in result.stopped_because


def test_time_budget_stops_training(shapes_dataset: Path, tmp_path: Path) -> None:
    result = train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=None, time_budget="3s"), progress=False)
    assert "time budget" in result.stopped_because
    assert sum(row["seconds"] for row in result.history) < 15


def test_binary_mode_and_auto_class_weights(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for index in range(8):
        image = rng.integers(0, 60, size=(40, 40, 3), dtype=np.uint8)
        mask = np.zeros((40, 40), np.uint8)
        mask[10:20, 5 + index : 25 + index] = 255  # 0/255 binary masks
        image[mask > 0] = 220
        Image.fromarray(image).save(tmp_path / "data" / "images" / f"{index}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"{index}.png")
    result = train(
        **tiny_options(tmp_path / "data", tmp_path / "run", class_weights="auto", loss="bce+dice"), progress=False
    )
    card = load_checkpoint(result.best_checkpoint).card
    assert card.binary is True and card.model.out_channels == 1
    assert card.classes == ["background", "foreground"]


def test_config_file_and_cli_overrides(shapes_dataset: Path, tmp_path: Path) -> None:
    from segkit.cli import main

    config = tiny_options(shapes_dataset, tmp_path / "run", epochs=5)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "config.yaml"), "--epochs", "1"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["model_kwargs"] == {"base_channels": 4, "depth": 2}


def test_bad_config_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from segkit.cli import main

    (tmp_path / "bad.yaml").write_text("epochs: 2\nbogus_option: 1\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "bad.yaml" in error and "bogus_option" in error


def test_split_by_name_is_deterministic_and_spread() -> None:
    names = [f"img_{i:02d}" for i in range(20)]
    train_idx, val_idx = split_by_name(list(reversed(names)), 0.2)
    assert len(val_idx) == 4 and len(train_idx) == 16
    assert split_by_name(list(reversed(names)), 0.2) == (train_idx, val_idx)
    val_names = sorted(list(reversed(names))[i] for i in val_idx)
    assert val_names == ["img_02", "img_07", "img_12", "img_17"]  # evenly spread, not the last four


def test_schedule_and_durations() -> None:
    assert lr_factor("cosine", 0.0, warmup=0.1) == pytest.approx(1e-3)
    assert lr_factor("cosine", 0.1, warmup=0.1) == pytest.approx(1.0)
    assert lr_factor("cosine", 0.55, warmup=0.1) == pytest.approx(0.5)
    assert lr_factor("cosine", 1.0) == pytest.approx(0.0)
    assert lr_factor("poly", 0.5, power=1.0) == pytest.approx(0.5)
    assert lr_factor("constant", 0.7) == 1.0
    assert parse_duration("10m") == 600 and parse_duration("1.5h") == 5400 and parse_duration("90") == 90
    with pytest.raises(SegkitError):
        parse_duration("ten minutes")


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(tiny_checkpoint(), path)
    before = path.read_bytes()

    def broken_save(obj, file):
        Path(file).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(SegkitError, match="ckpt.pt: cannot write \\(disk full\\)"):  # one line, old file kept
        save_checkpoint(tiny_checkpoint(seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"channels_last": False}, {"compile": True}],
                         ids=["bf16", "nchw", "compile"])
def test_precision_memory_format_and_compile_options_train(shapes_dataset: Path, tmp_path: Path, options: dict) -> None:
    result = train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=1, **options), progress=False)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
    config = load_checkpoint(result.best_checkpoint).card.training.config
    assert config | options == config
    # The checkpoint loads into a plain (uncompiled, NCHW) model for prediction.
    from segkit.prediction.predictor import Predictor

    mask = Predictor.from_checkpoint(result.best_checkpoint, device="cpu").predict(np.zeros((20, 30, 3), np.uint8))
    assert mask.shape == (20, 30)
