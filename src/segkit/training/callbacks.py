"""Trainer callbacks: the public seams that loggers, benchmarks and tests hook into.

As nnU-Net's trainer exposes ``on_epoch_end``/``on_validation_epoch_end``, segkit's
:class:`~segkit.training.trainer.Trainer` calls every :class:`Callback` it was given at
fixed points of a run, on the main process only (rank 0 under ``torchrun``). A callback
overrides the hooks it needs; the others do nothing.

What a hook may read from the trainer (public, stable): ``config`` (the
:class:`~segkit.training.config.TrainConfig`, every option resolved), ``out`` (the run
folder), ``classes``, ``card`` (the :class:`~segkit.checkpoint.ModelCard` of the run:
palette, background ...), ``history`` (one dict per finished epoch) and
``max_epochs_estimate`` (epochs expected to fit the budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from segkit.checkpoint import Checkpoint
    from segkit.training.trainer import Trainer, TrainResult


@dataclass
class ValidationSamples:
    """The first validation images with their truth and the prediction, at their original size.

    Attributes:
        names: sample names.
        images: ``(H, W, 3)`` uint8 RGB images.
        truths: ``(H, W)`` uint8 true masks (ignored pixels hold the ignore value).
        predictions: ``(H, W)`` uint8 predicted masks.
    """

    names: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    truths: list[np.ndarray] = field(default_factory=list)
    predictions: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


class Callback:
    """Base class of trainer callbacks; every hook is optional."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch (after the plan, data and model are ready)."""

    def on_validation_end(
        self, trainer: Trainer, epoch: int, metrics: dict[str, Any], samples: ValidationSamples
    ) -> None:
        """After a validation: the metrics dict of ``ConfusionMatrix.compute`` and the sample images."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, Any]) -> None:
        """After an epoch's training (and validation, when it had one): its ``history`` row."""

    def on_checkpoint(self, trainer: Trainer, path: Path, checkpoint: Checkpoint) -> None:
        """After a checkpoint file was written (``best.pt``, ``last.pt``, ``epoch_NNN.pt``)."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """After the last epoch, when ``metrics.json`` is written."""
