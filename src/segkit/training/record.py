"""What a run has done so far: its history, its best validation, the validation images and where to resume.

The trainer keeps one :class:`RunRecord`; ``last.pt`` saves it (``resume["progress"]``) and
a resumed run restores it, so that the run goes on as if it had never stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from segkit.checkpoint import TrainingSummary
from segkit.training.budget import VALIDATION_SHARE


@dataclass
class RunRecord:
    """The state of a run between epochs.

    Attributes:
        history: one dict per finished epoch (loss, lr, seconds, validation scores ...).
        best_metric, best_metrics, best_epoch, best_weights: the best validation so far
            (its mIoU, its metrics dict, its epoch, and whether ``"raw"`` or ``"ema"`` weights scored it).
        validations_without_gain: validations since the best one (early stopping).
        val_every: validate every this many epochs (``0``: set after the first validation).
        val_indices: the validation images scored (an evenly spread subset when all would not fit the budget).
        start_epoch, resume_step: where training goes on (the step inside an interrupted epoch).
        partial_epoch: the interrupted epoch's running loss sum and images seen.
    """

    val_every: int
    val_indices: list[int]
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float = -math.inf
    best_metrics: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    best_weights: str = "raw"
    validations_without_gain: int = 0
    start_epoch: int = 1
    resume_step: int = 0
    partial_epoch: dict[str, float] = field(default_factory=dict)

    def position(self) -> str:
        """Where training goes on: ``"epoch 3"``, or ``"epoch 3, step 12"`` inside an interrupted epoch."""
        return f"epoch {self.start_epoch}" + (f", step {self.resume_step}" if self.resume_step else "")

    def keep_best(self, epoch: int, metrics: dict[str, Any], weights: str) -> bool:
        """Note a validation; whether it is the best so far (by mIoU)."""
        improved = metrics["mIoU"] is not None and metrics["mIoU"] > self.best_metric
        if improved:
            self.best_metric, self.best_metrics, self.best_epoch = float(metrics["mIoU"]), metrics, epoch
            self.best_weights = weights
            self.validations_without_gain = 0
        else:
            self.validations_without_gain += 1
        return improved

    def space_validations(self, cost: float, epoch_seconds: float) -> None:
        """With ``--val-every 0``: validate every so many epochs that validating (``cost`` seconds, checkpoints
        included) takes at most :data:`~segkit.training.budget.VALIDATION_SHARE` of the time. Set once, after the
        first validation: which epochs are validated does not depend on the machine's speed after that."""
        if not self.val_every:
            share = VALIDATION_SHARE / (1 - VALIDATION_SHARE)
            self.val_every = max(1, math.ceil(cost / (share * max(epoch_seconds, 1e-9))))

    def due_for_validation(self, epoch: int, final: bool) -> bool:
        """Validate after the first and the last epoch, and every ``val_every`` epochs in between."""
        return final or epoch == 1 or not self.val_every or epoch % self.val_every == 0

    def summary(self, epoch: int, weights: str, **facts: Any) -> TrainingSummary:
        """The card's training summary after ``epoch`` for the ``weights`` saved; ``facts``: config, plan, seconds, data."""
        best_metric = self.best_metric if self.best_metrics else None
        return TrainingSummary(
            epoch=epoch,
            best_epoch=self.best_epoch,
            best_metric=best_metric,
            metrics=self.best_metrics,
            history=self.history,
            weights=weights,
            **facts,
        )

    def progress(self, epoch: int) -> dict[str, Any]:
        """The ``resume["progress"]`` entry of ``last.pt`` after ``epoch`` (or inside it, when interrupted)."""
        partial = self.partial_epoch
        return {
            "epoch": epoch if partial else epoch + 1,
            "step": int(partial.get("step", 0)),
            "partial": {key: float(value) for key, value in partial.items() if key != "step"},
            "validations_without_gain": self.validations_without_gain,
            "best_weights": self.best_weights,
            "val_every": self.val_every,
            "val_indices": list(self.val_indices),
        }

    @classmethod
    def restore(cls, training: TrainingSummary, progress: dict[str, Any], val_indices: list[int]) -> RunRecord:
        """The record a ``last.pt`` saved: its card's training summary and its ``progress`` entry."""
        return cls(
            val_every=int(progress["val_every"]),
            val_indices=[int(index) for index in progress.get("val_indices", val_indices)],
            history=list(training.history),
            best_metric=-math.inf if training.best_metric is None else float(training.best_metric),
            best_metrics=dict(training.metrics),
            best_epoch=training.best_epoch,
            best_weights=str(progress["best_weights"]),
            validations_without_gain=int(progress["validations_without_gain"]),
            start_epoch=int(progress["epoch"]),
            resume_step=int(progress["step"]),
            partial_epoch=dict(progress.get("partial", {})),
        )
