"""Trainer callbacks: the public seams that loggers, benchmarks and tests hook into.

As nnU-Net's trainer exposes ``on_epoch_end``/``on_validation_epoch_end``, segkit's
:class:`~segkit.training.trainer.Trainer` calls every :class:`Callback` it was given at
fixed points of a run, on the main process only (rank 0 under ``torchrun``). A callback
overrides the hooks it needs; the others do nothing.

What a hook may read from the trainer is :class:`RunState` (public, stable); hooks are typed
against it, not against the trainer, so this module (and every callback) sits below the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from segkit.checkpoint import Checkpoint, ModelCard
    from segkit.config import TrainConfig


class RunState(Protocol):
    """What a callback may read from the running trainer."""

    @property
    def config(self) -> TrainConfig:
        """Every option, resolved (planned ones included)."""

    @property
    def out(self) -> Path:
        """The run folder."""

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""

    @property
    def card(self) -> ModelCard:
        """The run's model card (palette, background class, preprocessing ...)."""

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per finished epoch."""

    @property
    def max_epochs_estimate(self) -> int:
        """Epochs expected to fit the budget (``max_epochs`` without one)."""

    @property
    def elapsed(self) -> float:
        """Seconds the run has spent, planning and race included."""

    @property
    def best_epoch(self) -> int:
        """The epoch of the best validation so far (0 before the first)."""

    @property
    def best_weights(self) -> str:
        """Which weights scored best: ``"raw"`` or ``"ema"``."""


@dataclass
class TrainResult:
    """What a finished run left behind."""

    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_because: str = ""
    never_predicted: list[str] = field(default_factory=list)


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

    def on_train_start(self, trainer: RunState) -> None:
        """Before the first epoch (after the plan, data and model are ready)."""

    def on_validation_end(
        self, trainer: RunState, epoch: int, metrics: dict[str, Any], samples: ValidationSamples
    ) -> None:
        """After a validation: the metrics dict of ``ConfusionMatrix.compute`` and the sample images."""

    def on_epoch_end(self, trainer: RunState, epoch: int, row: dict[str, Any]) -> None:
        """After an epoch's training (and validation, when it had one): its ``history`` row."""

    def on_checkpoint(self, trainer: RunState, path: Path, checkpoint: Checkpoint) -> None:
        """After a checkpoint file was written (``best.pt``, ``last.pt``, ``epoch_NNN.pt``)."""

    def on_train_end(self, trainer: RunState, result: TrainResult) -> None:
        """After the last epoch, when ``metrics.json`` is written."""
