"""Experiment loggers, driven through the callback hooks with a stand-in trainer and read back from disk."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from segkit.checkpoint import ModelCard
from segkit.config import TrainConfig
from segkit.data.transforms import PreprocessConfig
from segkit.errors import SegkitError
from segkit.evaluation.metrics import compute_metrics
from segkit.training.callbacks import ValidationSamples
from segkit.training.loggers import create_loggers, flat_options, metric_key

CLASSES = ["background", "road", "Land (unpaved)"]
EPOCHS = 3


def fake_trainer(out: Path, **config: object) -> SimpleNamespace:
    """The public attributes callbacks may read (see segkit.training.callbacks)."""
    card = ModelCard.create("unet", CLASSES, PreprocessConfig(img_size=32), model_kwargs={"depth": 2})
    return SimpleNamespace(
        config=TrainConfig(data="data/", epochs=EPOCHS, model_kwargs={"depth": 2}, **config),
        out=out,
        classes=list(CLASSES),
        card=card,
        history=[],
        max_epochs_estimate=EPOCHS,
    )


def samples(epoch: int) -> ValidationSamples:
    """Two validation samples of different sizes, as the trainer passes them."""
    rng = np.random.default_rng(epoch)
    result = ValidationSamples()
    for name, (height, width) in (("a", (20, 30)), ("b", (24, 16))):
        result.names.append(name)
        result.images.append(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        truth = rng.integers(0, 3, (height, width), dtype=np.uint8)
        truth[0] = 255
        result.truths.append(truth)
        result.predictions.append(rng.integers(0, 3, (height, width), dtype=np.uint8))
    return result


def run_epochs(trainer: SimpleNamespace, loggers: list, first: int = 1, last: int = EPOCHS) -> None:
    """What the trainer does: start, then per epoch validation end and epoch end, then train end."""
    for callback in loggers:
        callback.on_train_start(trainer)
    for epoch in range(first, last + 1):
        matrix = np.array([[50, 2, 0], [3, 40 + epoch, 0], [0, 0, 0]])
        metrics = compute_metrics(matrix, CLASSES, 2)
        for callback in loggers:
            callback.on_validation_end(trainer, epoch, metrics, samples(epoch))
        row = {
            "epoch": epoch,
            "train_loss": 1.0 / epoch,
            "lr": 1e-3 / epoch,
            "val_mIoU": metrics["mIoU"],
            "val_mDice": metrics["mDice"],
            "val_pixel_accuracy": metrics["pixel_accuracy"],
            "seconds": 2.0,
            "images_per_second": 10.0 + epoch,
        }
        trainer.history.append(row)
        for callback in loggers:
            callback.on_epoch_end(trainer, epoch, row)
    for callback in loggers:
        callback.on_train_end(trainer, SimpleNamespace(out=trainer.out, best_metrics=metrics))


def test_csv_is_always_on_and_holds_every_epoch(tmp_path: Path) -> None:
    loggers = create_loggers([], tmp_path)
    assert [type(item).__name__ for item in loggers] == ["RunPictures", "CsvLogger"]
    trainer = fake_trainer(tmp_path)
    run_epochs(trainer, loggers)
    with open(tmp_path / "history.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert list(rows[0])[:3] == ["epoch", "train_loss", "lr"]
    assert float(rows[2]["train_loss"]) == pytest.approx(1 / 3)


def test_unknown_and_missing_loggers_are_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SegkitError, match="unknown logger 'wandb'"):
        create_loggers(["wandb"], tmp_path)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a)
    )
    with pytest.raises(SegkitError, match=r"--logger mlflow needs the mlflow package: pip install 'segkit\[mlflow\]'"):
        create_loggers(["csv", "mlflow"], tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written before the check


def test_tensorboard_event_files_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    trainer = fake_trainer(tmp_path, lr=0.003)
    run_epochs(trainer, create_loggers(["tensorboard"], tmp_path))
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("train_loss", "val_mIoU", "lr", "images_per_second", "val_IoU/road", "val_IoU/background"):
        assert tag in scalars
    assert "val_IoU/Land (unpaved)" not in scalars  # absent from truth and prediction: undefined, not logged
    assert [event.step for event in events.Scalars("val_mIoU")] == [1, 2, 3]
    assert [event.value for event in events.Scalars("images_per_second")] == [11.0, 12.0, 13.0]
    images = events.Images("samples")
    assert [image.step for image in images] == [1, 2, 3] and images[0].width > 3 * 16
    hparams = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(0.003)
    assert start.hparams["model_kwargs.depth"].number_value == 2
    assert start.hparams["model"].string_value == "unet"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert "val_mIoU" in [info.name.tag for info in experiment.metric_infos]


def test_mlflow_local_store_read_back_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    trainer = fake_trainer(out, batch_size=4)
    run_epochs(trainer, create_loggers(["mlflow"], out), last=2)
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("segkit").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["batch_size"] == "4" and run.data.params["model_kwargs.depth"] == "2"
    history = client.get_metric_history(run.info.run_id, "val_mIoU")
    assert [metric.step for metric in history] == [1, 2]
    assert metric_key("val_IoU/Land (unpaved)") == "val_IoU/Land _unpaved_"
    assert [item.path for item in client.list_artifacts(run.info.run_id, "samples")] == [
        "samples/epoch_001.png",
        "samples/epoch_002.png",
    ]
    assert (out / "mlartifacts").is_dir()

    # Resuming the run folder continues the same MLflow run.
    run_epochs(trainer, create_loggers(["mlflow"], out), first=3, last=3)
    (again,) = client.search_runs([client.get_experiment_by_name("segkit").experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]


def test_flat_options() -> None:
    assert flat_options({"a": 1, "b": {"c": [1, 2], "d": None}, "e": "x"}) == {
        "a": 1,
        "b.c": "[1, 2]",
        "b.d": "None",
        "e": "x",
    }
