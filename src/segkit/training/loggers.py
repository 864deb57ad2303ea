"""Experiment logs: ``history.csv``, TensorBoard and MLflow, as trainer callbacks.

Each logger is a :class:`~segkit.training.callbacks.Callback` (called on the main process
only) that records, per epoch, the history row's numbers (losses, mIoU, mDice, pixel
accuracy, learning rate, images/s), the validation IoU of every class, and the sample
predictions as an image; TensorBoard and MLflow also get every training option as
hyper-parameters. :func:`create_loggers` builds them by name (``segkit train --logger``).

- ``csv``: ``RUN/history.csv``, one row per epoch (always on).
- ``tensorboard``: event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN/tensorboard``),
  through ``torch.utils.tensorboard`` (needs the ``tensorboard`` package: ``segkit[tensorboard]``).
- ``mlflow``: a run in the store named by ``MLFLOW_TRACKING_URI``, else in a local store
  in the run folder, ``RUN/mlflow.db`` with artifacts in ``RUN/mlartifacts``
  (``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``; needs ``segkit[mlflow]``).
  MLflow 3 refuses new plain-folder (``file:``) stores, so the local store is a SQLite file.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from segkit.errors import SegkitError
from segkit.files import atomic_write
from segkit.training.callbacks import Callback, RunState, TrainResult, ValidationSamples

LOGGERS = ("csv", "tensorboard", "mlflow")
# Logger name -> (module that must be importable, pip extra that installs it).
REQUIREMENTS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
PER_CLASS_PREFIX = "val_IoU/"
# curves.png and the sample images are redrawn at most this often (seconds), and at the end of the run.
PICTURE_INTERVAL = 15.0
# History keys that are not per-epoch measurements.
NOT_SCALARS = ("epoch",)


def create_loggers(names: Sequence[str], out: str | Path) -> list[Callback]:
    """The loggers named (``csv`` is always included), writing into the run folder ``out``.

    Args:
        names: any of :data:`LOGGERS`, in any order, repeats ignored.
        out: the run folder.

    Raises:
        SegkitError: an unknown logger, or a logger whose package is not installed.
    """
    wanted = ["csv", *(name for name in names if name != "csv")]
    unknown = [name for name in wanted if name not in LOGGERS]
    if unknown:
        raise SegkitError(None, f"unknown logger {unknown[0]!r} (choose from {', '.join(LOGGERS)})")
    for name in dict.fromkeys(wanted):
        module, extra = REQUIREMENTS.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            raise SegkitError(None, f"--logger {name} needs the {module} package: pip install 'segkit[{extra}]'")
    out = Path(out)
    builders = {"csv": CsvLogger, "tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}
    return [RunPictures(out), *(builders[name](out) for name in dict.fromkeys(wanted))]


def epoch_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The defined numbers of a history row (everything but the epoch), by history key."""
    return {key: float(value) for key, value in row.items() if key not in NOT_SCALARS and _is_number(value)}


def class_iou_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``val_IoU/<class>`` -> IoU for each class whose IoU is defined."""
    return {
        PER_CLASS_PREFIX + name: float(row["iou"])
        for name, row in metrics.get("per_class", {}).items()
        if _is_number(row.get("iou"))
    }


def flat_options(values: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested options as ``{"model_kwargs.depth": 4, ...}``; lists and None become text."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_options(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def samples_image(trainer: RunState, epoch: int, samples: ValidationSamples) -> np.ndarray:
    """The epoch's sample grid (image | truth | prediction) in the dataset's colours."""
    from segkit.plots import sample_grid

    card = trainer.card
    return sample_grid(
        samples.images,
        samples.truths,
        samples.predictions,
        card.palette_array(),
        classes=card.classes,
        names=samples.names,
        epoch=epoch,
        ignore_index=card.ignore_index,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


class CsvLogger(Callback):
    """``history.csv``: the trainer's history, one row per epoch, rewritten atomically after each epoch.

    The columns are the history rows' keys in the order they first appear, so a
    resumed run's file holds the earlier epochs too.
    """

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / "history.csv"

    def on_epoch_end(self, trainer: RunState, epoch: int, row: dict[str, Any]) -> None:
        history = list(trainer.history)
        columns = list(dict.fromkeys(key for item in history for key in item))

        def write(temp: Path) -> None:
            with open(temp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(history)

        atomic_write(self.path, write)


class RunPictures(Callback):
    """``curves.png`` and ``samples/epoch_NNN.png`` (always on), drawn at most every :data:`PICTURE_INTERVAL`
    seconds and at the end: drawing them after every short epoch would cost more than the epoch."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.drawn = {"curves": -math.inf, "samples": -math.inf}
        self.pending: tuple[RunState, int, ValidationSamples] | None = None

    def _due(self, kind: str) -> bool:
        if time.monotonic() - self.drawn[kind] < PICTURE_INTERVAL:
            return False
        self.drawn[kind] = time.monotonic()
        return True

    def on_epoch_end(self, trainer: RunState, epoch: int, row: dict[str, Any]) -> None:
        if self._due("curves"):
            self._curves(trainer)

    def on_validation_end(
        self, trainer: RunState, epoch: int, metrics: dict[str, Any], samples: ValidationSamples
    ) -> None:
        self.pending = (trainer, epoch, samples) if len(samples) else None
        if self.pending is not None and self._due("samples"):
            self._samples()

    def on_train_end(self, trainer: RunState, result: TrainResult) -> None:
        self._curves(trainer)
        self._samples()

    def _curves(self, trainer: RunState) -> None:
        from segkit.plots import plot_curves

        plot_curves(trainer.history, self.out / "curves.png")

    def _samples(self) -> None:
        from segkit.data.io import write_image

        if self.pending is not None:
            trainer, epoch, samples = self.pending
            write_image(self.out / "samples" / f"epoch_{epoch:03d}.png", samples_image(trainer, epoch, samples))
            self.pending = None


class TensorBoardLogger(Callback):
    """TensorBoard event files in ``RUN/tensorboard``: scalars, per-class IoU, sample images, hyper-parameters.

    Scalars are tagged with their history names (``train_loss``, ``val_mIoU``, ``lr`` ...)
    and per-class IoU as ``val_IoU/<class>``, at step = epoch. The options appear in the
    HParams tab with the validation metrics as its metrics, and as text under ``config``.
    """

    METRICS = ("val_mIoU", "val_mDice", "val_pixel_accuracy")

    def __init__(self, out: str | Path) -> None:
        self.log_dir = Path(out) / "tensorboard"
        self.writer: Any = None

    def on_train_start(self, trainer: RunState) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        done = len(trainer.history)
        # A resumed run drops what a crashed run logged after its last finished epoch.
        self.writer = SummaryWriter(str(self.log_dir), purge_step=done + 1 if done else None)
        options = flat_options(trainer.config.to_dict())
        experiment, start, end = hparams(options, {metric: 0.0 for metric in self.METRICS})
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)
        table = "\n".join(f"| {key} | {value} |" for key, value in options.items())
        self.writer.add_text("config", "| option | value |\n|---|---|\n" + table, global_step=done)

    def on_validation_end(
        self, trainer: RunState, epoch: int, metrics: dict[str, Any], samples: ValidationSamples
    ) -> None:
        for tag, value in class_iou_scalars(metrics).items():
            self.writer.add_scalar(tag, value, epoch)
        if len(samples):
            self.writer.add_image("samples", samples_image(trainer, epoch, samples), epoch, dataformats="HWC")

    def on_epoch_end(self, trainer: RunState, epoch: int, row: dict[str, Any]) -> None:
        for tag, value in epoch_scalars(row).items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def on_train_end(self, trainer: RunState, result: TrainResult) -> None:
        self.writer.close()


class MLflowLogger(Callback):
    """An MLflow run: options as parameters, per-epoch metrics (step = epoch), sample images as artifacts.

    The store is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///RUN/mlflow.db`` (experiment
    ``segkit``, artifacts in ``RUN/mlartifacts``). A resumed run continues its MLflow run
    (found by the ``segkit.run_dir`` tag). Metric names keep letters, digits and ``_-./ ``;
    other characters of class names become ``_``.
    """

    EXPERIMENT = "segkit"
    RUN_TAG = "segkit.run_dir"

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.out / 'mlflow.db').resolve()}"
        self.client: Any = None
        self.run_id = ""

    def on_train_start(self, trainer: RunState) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.out.mkdir(parents=True, exist_ok=True)
        with _quiet("mlflow", "alembic"):  # the store logs its table creation at INFO
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            experiment = self.client.get_experiment_by_name(self.EXPERIMENT)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else self.client.create_experiment(
                    self.EXPERIMENT, artifact_location=(self.out / "mlartifacts").resolve().as_uri()
                )
            )
        run_dir = str(self.out.resolve())
        previous = (
            self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{self.RUN_TAG}` = '{_quote(run_dir)}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if trainer.history
            else []
        )
        if previous:
            self.run_id = previous[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(experiment_id, run_name=self.out.name, tags={self.RUN_TAG: run_dir})
        self.run_id = run.info.run_id
        params = [Param(key, str(value)[:6000]) for key, value in flat_options(trainer.config.to_dict()).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def on_validation_end(
        self, trainer: RunState, epoch: int, metrics: dict[str, Any], samples: ValidationSamples
    ) -> None:
        self._log_metrics(class_iou_scalars(metrics), epoch)
        if len(samples):
            image = samples_image(trainer, epoch, samples)
            self.client.log_image(self.run_id, image, artifact_file=f"samples/epoch_{epoch:03d}.png")

    def on_epoch_end(self, trainer: RunState, epoch: int, row: dict[str, Any]) -> None:
        self._log_metrics(epoch_scalars(row), epoch)

    def on_train_end(self, trainer: RunState, result: TrainResult) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(key), value, now, step) for key, value in values.items()]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])


def metric_key(name: str) -> str:
    """An MLflow-valid metric name: characters other than letters, digits and ``_-./ `` become ``_``."""
    return re.sub(r"[^\w\-./ ]", "_", name)


def _quote(text: str) -> str:
    """``text`` inside single quotes of an MLflow search filter."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise the named libraries' loggers to WARNING for the duration."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for item, level in zip(loggers, levels):
            item.setLevel(level)
