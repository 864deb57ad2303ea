"""The training loop through its public seams: outputs, card, resume, EMA, validation, faults, options."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_checkpoint

from segkit.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from segkit.cli import main
from segkit.config import TrainConfig, parse_duration, resume_config
from segkit.data.sources import split_by_name
from segkit.errors import SegkitError
from segkit.training.callbacks import Callback
from segkit.training.run_folder import LOCK_NAME, RunLock
from segkit.training.schedule import lr_factor
from segkit.training.trainer import RunInterrupted, Trainer, train
from training.conftest import tiny_options


class Crash(Callback):
    """Raise at the end of epoch ``at`` (as a crash would, after last.pt was written)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, Any]) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt("simulated crash")


class Recorder(Callback):
    """What the hooks saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_train_start(self, trainer: Trainer) -> None:
        self.calls.append(("start", trainer.config.model))

    def on_validation_end(self, trainer, epoch, metrics, samples) -> None:
        self.calls.append(("validation", (epoch, len(samples), samples.images[0].shape)))

    def on_epoch_end(self, trainer, epoch, row) -> None:
        self.calls.append(("epoch", epoch))

    def on_checkpoint(self, trainer, path, checkpoint) -> None:
        self.calls.append(("checkpoint", path.name))

    def on_train_end(self, trainer, result) -> None:
        self.calls.append(("end", result.stopped_because))


def fit(options: dict[str, Any], *callbacks: Callback) -> Trainer:
    trainer = Trainer(TrainConfig.from_options(options), callbacks=list(callbacks), progress=False)
    trainer.fit()
    return trainer


def test_run_writes_every_output(shapes_dataset: Path, tmp_path: Path) -> None:
    result = train(**tiny_options(shapes_dataset, tmp_path / "run"), progress=False)
    out = tmp_path / "run"
    for name in ("best.pt", "last.pt", "history.csv", "curves.png", "config.yaml", "metrics.json", "plan.json"):
        assert (out / name).is_file(), name
    assert (out / "samples").is_dir() and list((out / "samples").glob("epoch_*.png"))
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "val_iou_disk" in rows[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mIoU"] == pytest.approx(result.best_metrics["mIoU"])
    assert set(metrics) >= {"pixel_accuracy", "mean_class_accuracy", "mIoU", "fwIoU", "mDice", "per_class"}
    assert yaml.safe_load((out / "config.yaml").read_text())["model_kwargs"] == {"base_channels": 4, "depth": 2}
    assert not (out / LOCK_NAME).exists()


def test_callbacks_see_every_stage(shapes_dataset: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    fit(tiny_options(shapes_dataset, tmp_path / "run"), recorder)
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2
    validation = next(value for kind, value in recorder.calls if kind == "validation")
    assert validation[1] == 3 and validation[2] == (48, 64, 3)  # samples at the original size
    assert {value for kind, value in recorder.calls if kind == "checkpoint"} == {"best.pt", "last.pt"}


def test_validation_scores_what_evaluate_scores(shapes_dataset: Path, tmp_path: Path) -> None:
    """best.pt is chosen on metrics at the original size, through the predict path: evaluate agrees exactly."""
    from segkit.evaluation.evaluate import evaluate_checkpoint

    result = train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=3), progress=False)
    evaluated = evaluate_checkpoint(result.best_checkpoint, shapes_dataset, device="cpu", val_split=0.25)
    assert evaluated["num_pixels"] == 3 * 48 * 64
    assert evaluated["confusion_matrix"] == result.best_metrics["confusion_matrix"]


def test_checkpoint_carries_everything_and_loads_weights_only(shapes_dataset: Path, tmp_path: Path) -> None:
    train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=1), progress=False)
    raw = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert "resume" not in raw
    best = ModelCard.from_dict(raw["card"])
    assert best.model.to_dict() == {
        "name": "unet",
        "out_channels": 4,
        "in_channels": 3,
        "kwargs": {"base_channels": 4, "depth": 2},
    }
    assert best.classes == ["_background_", "disk", "triangle", "square"] and best.background == 0  # labels.txt
    assert len(best.palette) == 4 and best.palette[0] == [0, 0, 0]
    assert best.preprocess.img_size == (32, 32) and best.preprocess.resize == "letterbox"
    assert best.ignore_index == 255 and best.binary is False and best.threshold == 0.5
    assert len(best.training.history) == 1 and best.training.weights in ("raw", "ema")
    assert best.training.data["train_images"] == 9 and best.training.plan["choices"]
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert {"optimizer", "scaler", "rng", "progress", "ema"} <= set(last["resume"])


def test_crash_then_resume_matches_the_uninterrupted_run(shapes_dataset: Path, tmp_path: Path) -> None:
    full = fit(tiny_options(shapes_dataset, tmp_path / "full", epochs=3))
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_options(shapes_dataset, tmp_path / "run", epochs=3), Crash(at=2))
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved.card.training.epoch == 2 and saved.resume["progress"]["epoch"] == 3
    resumed = Trainer(resume_config({"resume": str(tmp_path / "run" / "last.pt")}), progress=False)
    assert resumed.record.start_epoch == 3 and resumed.learner.steps_done == saved.resume["progress"]["steps_done"]
    result = resumed.fit()
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-5)
    assert result.best_metrics["mIoU"] == pytest.approx(full.record.best_metric, abs=1e-6)


def test_stop_signal_mid_epoch_writes_last_pt_and_resume_is_exact(shapes_dataset: Path, tmp_path: Path) -> None:
    class Signal(Callback):  # what StopSignals does when SIGTERM arrives during epoch 2
        def on_epoch_end(self, trainer, epoch, row):
            if epoch == 1:
                trainer.stop_signals.received = "SIGTERM"

    options = tiny_options(shapes_dataset, tmp_path / "run", epochs=3, batch_size=2)
    full = fit({**options, "out": str(tmp_path / "full")})
    with pytest.raises(RunInterrupted, match="stopped by SIGTERM.*--resume") as stopped:
        fit(options, Signal())
    assert stopped.value.exit_code == 128 + 15
    progress = load_checkpoint(tmp_path / "run" / "last.pt").resume["progress"]
    assert (progress["epoch"], progress["step"]) == (2, 1)  # the step boundary inside epoch 2
    result = Trainer(resume_config({"resume": str(tmp_path / "run" / "last.pt")}), progress=False).fit()
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    for got, expected in zip(result.history, full.history):
        assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
    assert result.best_metrics["mIoU"] == pytest.approx(full.record.best_metric, abs=1e-6)


def test_patience_counter_survives_resume(shapes_dataset: Path, tmp_path: Path) -> None:
    options = tiny_options(shapes_dataset, tmp_path / "run", epochs=8, lr=0.0, patience=3, ema=False)
    with pytest.raises(KeyboardInterrupt):
        fit(options, Crash(at=2))
    assert load_checkpoint(tmp_path / "run" / "last.pt").resume["progress"]["validations_without_gain"] == 1
    result = Trainer(resume_config({"resume": str(tmp_path / "run" / "last.pt")}), progress=False).fit()
    assert len(result.history) == 4 and "early stopping" in result.stopped_because


def test_resume_uses_the_runs_own_options_and_folder(
    shapes_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=1), progress=False)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "last.pt").write_bytes((tmp_path / "run" / "last.pt").read_bytes())
    before = (tmp_path / "run" / "last.pt").read_bytes()
    assert main(["train", str(shapes_dataset), "--resume", str(copy / "last.pt"), "--epochs", "2"]) == 0
    assert (tmp_path / "run" / "last.pt").read_bytes() == before  # the original run is untouched
    assert load_checkpoint(copy / "last.pt").card.training.epoch == 2
    assert load_checkpoint(copy / "last.pt").card.preprocess.img_size == (32, 32)  # not the default 256
    capsys.readouterr()
    assert main(["train", str(shapes_dataset), "--resume", str(copy / "last.pt"), "--img-size", "64"]) == 2
    assert "cannot change when resuming: --img-size is 32 32 in the run, given 64" in capsys.readouterr().err
    # the original command plus --resume, as typed from the shell history: the same values are accepted
    same = ["--img-size", "32", "--batch-size", "4", "--seed", "0", "--val-split", "0.25", "--lr", "0.003"]
    assert main(["train", str(shapes_dataset), "--resume", str(copy / "last.pt"), "--epochs", "3", *same]) == 0
    assert load_checkpoint(copy / "last.pt").card.training.epoch == 3


def test_second_run_into_the_same_folder_is_refused_and_stale_locks_are_taken(
    shapes_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(SegkitError, match="another segkit train .* is writing to this folder"):
            Trainer(TrainConfig.from_options(tiny_options(shapes_dataset, out)), progress=False)
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.uname().nodename} 999999999")  # a process that no longer exists
    fit(tiny_options(shapes_dataset, out, epochs=1))
    assert (out / "best.pt").is_file() and not (out / LOCK_NAME).exists()


def test_failed_checkpoint_write_stops_with_one_line_and_keeps_the_old_files(
    shapes_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit(tiny_options(shapes_dataset, tmp_path / "run", epochs=1))
    before = {name: (tmp_path / "run" / name).read_bytes() for name in ("best.pt", "last.pt")}

    def disk_full(obj: Any, file: Any) -> None:
        Path(file).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(
        SegkitError, match=r"last.pt: cannot write \(the disk is full\); the previous last.pt and best.pt are intact"
    ):
        Trainer(resume_config({"resume": str(tmp_path / "run" / "last.pt"), "epochs": 3}), progress=False).fit()
    assert {name: (tmp_path / "run" / name).read_bytes() for name in before} == before
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shapes_dataset: Path, tmp_path: Path) -> None:
    class Poison(Callback):
        def on_train_start(self, trainer):
            with torch.no_grad():
                next(trainer.learner.model.parameters()).fill_(float("nan"))

    fit(tiny_options(shapes_dataset, tmp_path / "run", epochs=1))
    good = (tmp_path / "run" / "last.pt").read_bytes()
    trainer = Trainer(
        resume_config({"resume": str(tmp_path / "run" / "last.pt"), "epochs": 3}), [Poison()], progress=False
    )
    with pytest.raises(SegkitError, match="loss became nan"):
        trainer.fit()
    assert (tmp_path / "run" / "last.pt").read_bytes() == good


def test_one_decode_per_image_with_val_split(
    shapes_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segkit.data.sources import DataSource

    loads: list[int] = []
    original = DataSource.load
    monkeypatch.setattr(DataSource, "load", lambda self, index: loads.append(index) or original(self, index))
    fit(tiny_options(shapes_dataset, tmp_path / "run", epochs=2))
    assert sorted(loads) == list(range(12))  # 9 training + 3 validation images, each decoded once


def test_valid_split_folder_is_the_validation_set(shapes_dataset: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "split"
    for split, names in (("train", range(0, 8)), ("valid", range(8, 12))):
        for folder in ("images", "masks"):
            (data / split / folder).mkdir(parents=True)
        for index in names:
            for folder in ("images", "masks"):
                source = (
                    next((shapes_dataset / folder).glob(f"*{index:03d}*"), None)
                    or sorted((shapes_dataset / folder).iterdir())[index]
                )
                shutil.copy(source, data / split / folder / source.name)
    shutil.copy(shapes_dataset / "class_names.txt", data / "class_names.txt")
    trainer = Trainer(TrainConfig.from_options(tiny_options(data, tmp_path / "run", epochs=1)), progress=False)
    assert len(trainer.data.train_indices) == 8 and len(trainer.data.val_indices) == 4


def test_ema_is_validated_and_the_better_weights_kept(shapes_dataset: Path, tmp_path: Path) -> None:
    trainer = fit(tiny_options(shapes_dataset, tmp_path / "run", epochs=3, lr=1e-2))
    final = trainer.history[-1]
    assert final["val_weights"] in ("raw", "ema") and trainer.learner.ema is not None
    best = load_checkpoint(tmp_path / "run" / "best.pt").card.training
    assert best.weights == trainer.best_weights
    raw = trainer.validate("raw").miou
    ema = trainer.validate("ema").miou
    assert trainer.record.best_metric >= min(raw, ema) - 1e-9
    plain = fit(tiny_options(shapes_dataset, tmp_path / "plain", epochs=1, ema=False))
    assert plain.learner.ema is None and plain.history[-1]["val_weights"] == "raw"


def test_never_predicted_classes_are_named(
    shapes_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    result = train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=1, lr=0.0), progress=False)
    truth_classes = [name for name, values in result.best_metrics["per_class"].items() if values["support"]]
    matrix = np.asarray(result.best_metrics["confusion_matrix"])
    expected = [
        name for c, name in enumerate(result.best_metrics["per_class"]) if matrix[c].sum() and not matrix[:, c].sum()
    ]
    assert result.never_predicted == expected and set(expected) <= set(truth_classes) and expected
    assert "never predicts " + ", ".join(expected) in caplog.text


def test_time_budget_stops_training(shapes_dataset: Path, tmp_path: Path) -> None:
    result = train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=None, time_budget="4s"), progress=False)
    assert "time budget" in result.stopped_because
    assert result.history[-1]["elapsed"] < 15


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
    config = tiny_options(shapes_dataset, tmp_path / "run", epochs=5)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "config.yaml"), "--epochs", "1"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["model_kwargs"] == {"base_channels": 4, "depth": 2}
    assert saved["preprocess"]["img_size"] == [32, 32]
    # the saved config.yaml is itself a valid --config
    assert main(["train", "--config", str(tmp_path / "run" / "config.yaml"), "--out", str(tmp_path / "again")]) == 0


def test_bad_config_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text("epochs: 2\nbogus_option: 1\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "bad.yaml" in error and "bogus_option" in error


def test_options_come_from_one_definition(capsys: pytest.CaptureFixture[str]) -> None:
    """Every TrainConfig field with a flag is on the command line, with its choices; unknown options name train."""
    import dataclasses

    from segkit.data.transforms import PreprocessConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for cls in (TrainConfig, PreprocessConfig):
        for item in dataclasses.fields(cls):
            if item.metadata.get("cli"):
                assert "--" + item.name.replace("_", "-") in text, item.name
    assert "{letterbox,resize,crop}" in text and "--no-pretrained" in text
    with pytest.raises(SystemExit):
        main(["train", "data", "--bogus"])
    assert "usage: segkit train" in capsys.readouterr().err


def test_split_by_name_is_deterministic_and_spread() -> None:
    names = [f"img_{i:02d}" for i in range(20)]
    train_idx, val_idx = split_by_name(list(reversed(names)), 0.2)
    assert len(val_idx) == 4 and len(train_idx) == 16
    assert split_by_name(list(reversed(names)), 0.2) == (train_idx, val_idx)
    val_names = sorted(list(reversed(names))[i] for i in val_idx)
    assert val_names == ["img_02", "img_07", "img_12", "img_17"]  # evenly spread, not the last four


def test_schedule_and_durations_need_units() -> None:
    assert lr_factor("cosine", 0.0, warmup=0.1) == pytest.approx(1e-3)
    assert lr_factor("cosine", 0.1, warmup=0.1) == pytest.approx(1.0)
    assert lr_factor("cosine", 0.55, warmup=0.1) == pytest.approx(0.5)
    assert lr_factor("cosine", 1.0) == pytest.approx(0.0)
    assert lr_factor("poly", 0.5, power=1.0) == pytest.approx(0.5)
    assert lr_factor("constant", 0.7) == 1.0
    assert parse_duration("10m") == 600 and parse_duration("1.5h") == 5400 and parse_duration(90) == 90
    with pytest.raises(SegkitError, match="needs a unit: 2s, 2m or 2h"):
        parse_duration("2")
    with pytest.raises(SegkitError):
        parse_duration("ten minutes")


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(tiny_checkpoint(), path)
    before = path.read_bytes()

    def broken_save(obj: Any, file: Any) -> None:
        Path(file).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(SegkitError, match="ckpt.pt: cannot write \\(disk full\\)"):  # one line, old file kept
        save_checkpoint(tiny_checkpoint(seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize(
    "options", [{"precision": "bf16"}, {"channels_last": False}, {"compile": True}], ids=["bf16", "nchw", "compile"]
)
def test_precision_memory_format_and_compile_options_train(shapes_dataset: Path, tmp_path: Path, options: dict) -> None:
    result = train(**tiny_options(shapes_dataset, tmp_path / "run", epochs=1, **options), progress=False)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
    config = load_checkpoint(result.best_checkpoint).card.training.config
    assert config | options == config
    # The checkpoint loads into a plain (uncompiled, NCHW) model for prediction.
    from segkit.prediction.predictor import Predictor

    mask = Predictor.from_checkpoint(result.best_checkpoint, device="cpu").predict(np.zeros((20, 30, 3), np.uint8))
    assert mask.shape == (20, 30)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_trains_on_cuda_with_mixed_precision(shapes_dataset: Path, tmp_path: Path, precision: str) -> None:
    """CUDA autocast (bf16, or float16 with gradient scaling), EMA and validation on the GPU; CPU prediction agrees."""
    from segkit.prediction.predictor import Predictor

    trainer = fit(tiny_options(shapes_dataset, tmp_path / "run", epochs=2, device="cuda", precision=precision))
    assert np.isfinite(trainer.history[-1]["train_loss"]) and trainer.learner.scaler.is_enabled() == (
        precision == "16-mixed"
    )
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    on_gpu = Predictor.from_checkpoint(tmp_path / "run" / "best.pt", device="cuda").predict(image)
    on_cpu = Predictor.from_checkpoint(tmp_path / "run" / "best.pt", device="cpu").predict(image)
    assert (on_gpu == on_cpu).mean() > 0.99


def test_the_datasets_own_colours_and_no_background_by_index(tmp_path: Path) -> None:
    """RGB masks with a classes.json: the card keeps the table's colours, and class 0 ("road") is not background."""
    from evaluation.test_evaluate import CLASSES, COLOURS, colour_dataset

    colour_dataset(tmp_path / "data", [(40, 52), (33, 30), (44, 40), (30, 36)])
    options = tiny_options(tmp_path / "data", tmp_path / "run", epochs=1, masks="masks_rgb", val_split=0.25)
    card = load_checkpoint(train(**options, progress=False).best_checkpoint).card
    assert card.classes == CLASSES and card.palette == [list(colour) for colour in COLOURS]
    assert card.background is None
