"""Experiment logs of a training run, as trainer callbacks: the run folder's history and pictures.

``create_loggers(["csv"], out)`` gives the callbacks that write ``history.csv``,
``curves.png`` and ``samples/epoch_NNN.png``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.data.io import atomic_write
from segkit.errors import SegkitError
from segkit.training.callbacks import Callback, ValidationSamples
from segkit.training.plots import plot_curves, save_samples

if TYPE_CHECKING:
    from segkit.training.trainer import Trainer

HISTORY_FIELDS = ("epoch", "train_loss", "val_mIoU", "val_mDice", "val_pixel_accuracy", "val_weights", "lr",
                  "seconds", "images_per_second", "elapsed")


class CSVLogger(Callback):
    """``history.csv`` (one row per epoch, per-class IoU columns) and ``curves.png``, rewritten after each epoch."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, Any]) -> None:
        history = trainer.history
        per_class = [f"val_iou_{name}" for name in trainer.classes]
        fields = [*HISTORY_FIELDS, *per_class]

        def write(temp: Path) -> None:
            with open(temp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(history)

        atomic_write(self.out / "history.csv", write)
        plot_curves(history, self.out / "curves.png")

    def on_validation_end(
        self, trainer: Trainer, epoch: int, metrics: dict[str, Any], samples: ValidationSamples
    ) -> None:
        if len(samples):
            save_samples(self.out / "samples" / f"epoch_{epoch:03d}.png", samples, trainer.card.palette_array())


def create_loggers(names: list[str], out: Path) -> list[Callback]:
    """The callbacks of ``--logger`` (``csv`` is always on)."""
    unknown = [name for name in names if name != "csv"]
    if unknown:
        raise SegkitError(None, f"--logger {', '.join(unknown)} is not available in this version")
    return [CSVLogger(out)]
