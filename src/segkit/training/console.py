"""What a training run says while it runs: one line per epoch, warnings about lost classes.

:class:`ConsoleReport` is a :class:`~segkit.training.callbacks.Callback`: per epoch it logs
``epoch k of ~N``, the loss, the validation mIoU with the worst classes, elapsed time and
an estimate of the time left; it warns when a class keeps an IoU of 0 after the first few
validations, and at the end names every class the model never predicts.
"""

from __future__ import annotations

import logging
from typing import Any

from segkit.training.callbacks import Callback, RunState, TrainResult, ValidationSamples
from segkit.training.validation import zero_iou_classes

logger = logging.getLogger("segkit.training")

# Validations before a class stuck at IoU 0 is worth a warning (the first ones are noise).
ZERO_IOU_GRACE = 3
WORST_SHOWN = 3


def format_duration(seconds: float) -> str:
    """``83`` -> ``1:23``, ``4000`` -> ``1:06:40``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ConsoleReport(Callback):
    """Logs the progress of a run (rank 0)."""

    def __init__(self) -> None:
        self.validations = 0
        self.warned: set[str] = set()

    def on_validation_end(
        self, trainer: RunState, epoch: int, metrics: dict[str, Any], samples: ValidationSamples
    ) -> None:
        self.validations += 1
        if self.validations < ZERO_IOU_GRACE:
            return
        stuck = [name for name in zero_iou_classes(metrics) if name not in self.warned]
        if stuck:
            self.warned.update(stuck)
            logger.warning("epoch %d: IoU is still 0 for %s", epoch, ", ".join(stuck))

    def on_epoch_end(self, trainer: RunState, epoch: int, row: dict[str, Any]) -> None:
        total = trainer.max_epochs_estimate
        parts = [
            f"epoch {epoch} of {'~' if trainer.config.time_budget else ''}{total}" if total else f"epoch {epoch}",
            f"loss {row['train_loss']:.4f}",
        ]
        if row.get("val_mIoU") is not None:
            tag = " (best)" if row.get("best") else ""
            parts.append(f"val mIoU {row['val_mIoU']:.4f}{tag}")
            ious = {
                key[len("val_iou_") :]: value
                for key, value in row.items()
                if key.startswith("val_iou_") and value is not None
            }
            worst = sorted(ious.items(), key=lambda item: item[1])[:WORST_SHOWN]
            if len(ious) > WORST_SHOWN:
                parts.append("worst: " + ", ".join(f"{name} {value:.2f}" for name, value in worst))
        elapsed = row.get("elapsed", trainer.elapsed)
        if trainer.config.time_budget:
            left = max(0.0, trainer.config.time_budget - elapsed)
        else:
            left = elapsed / max(len(trainer.history), 1) * max(trainer.config.max_epochs - epoch, 0)
        parts.append(f"{format_duration(elapsed)} elapsed, ~{format_duration(left)} left")
        parts.append(f"{row['images_per_second']:.1f} img/s")
        logger.info("%s", " · ".join(parts))

    def on_train_end(self, trainer: RunState, result: TrainResult) -> None:
        best = result.best_metrics.get("mIoU")
        weights = " (EMA weights)" if trainer.best_weights == "ema" else ""
        summary = f"best val mIoU {best:.4f} at epoch {trainer.best_epoch}{weights}" if best is not None else "no mIoU"
        logger.info("training done: %s; %s", result.stopped_because, summary)
        if result.never_predicted:
            hint = (
                "more data of it, a longer --time-budget or --class-weights auto"
                if trainer.config.class_weights is None
                else "more data of it or a longer --time-budget (the loss weighs it up already)"
            )
            logger.warning(
                "the best model never predicts %s although the validation masks contain it; %s may help",
                ", ".join(result.never_predicted),
                hint,
            )
