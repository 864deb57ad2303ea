"""Validation that measures what the user gets: predictions at each image's original size.

Every validation image goes through :class:`segkit.prediction.predictor.Predictor` — the
code ``segkit predict`` runs, with the same resize policy, tiling and undo to the original
pixels — and is scored against its original, un-resized mask. The choice of ``best.pt`` is
made on that number, never on a score at the network's input size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from segkit.checkpoint import ModelCard
from segkit.training.callbacks import ValidationSamples

# Validation images predicted per forward pass (letterbox/resize; crop images go one by one).
VALIDATION_BATCH = 8


@dataclass
class ValidationResult:
    """One validation of one set of weights.

    Attributes:
        metrics: ``ConfusionMatrix.compute()`` over all validation images (all ranks).
        samples: the first validation images with truth and prediction (main rank).
        seconds: wall time.
    """

    metrics: dict[str, Any]
    samples: ValidationSamples = field(default_factory=ValidationSamples)
    seconds: float = 0.0

    @property
    def miou(self) -> float:
        value = self.metrics.get("mIoU")
        return float("nan") if value is None else float(value)


def validate_model(
    model: nn.Module,
    card: ModelCard,
    source: Any,
    indices: list[int],
    *,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    num_samples: int = 0,
) -> ValidationResult:
    """Score ``model`` on ``source``'s ``indices`` at original size (each rank takes every ``world_size``-th image).

    The confusion matrix is summed over ranks, so every rank gets the metrics a single
    process would compute. Leaves ``model`` in eval mode.
    """
    from segkit.evaluation.confusion import ConfusionMatrix
    from segkit.prediction.predictor import Predictor

    start = time.monotonic()
    predictor = Predictor(model, card, device=device, batch_size=VALIDATION_BATCH)
    matrix = ConfusionMatrix(card.num_classes, ignore_index=card.ignore_index, class_names=card.classes)
    samples = ValidationSamples()
    mine = indices[rank::world_size]
    for begin in range(0, len(mine), VALIDATION_BATCH):
        loaded = [source.load(index) for index in mine[begin : begin + VALIDATION_BATCH]]
        predictions = predictor.predict_batch([np.asarray(sample.image) for sample in loaded])
        for sample, prediction in zip(loaded, predictions):
            matrix.update(prediction, np.asarray(sample.mask))
            if len(samples) < num_samples:
                samples.names.append(sample.name)
                samples.images.append(np.asarray(sample.image))
                samples.truths.append(np.asarray(sample.mask))
                samples.predictions.append(prediction)
    matrix.all_reduce()
    return ValidationResult(matrix.compute(), samples, time.monotonic() - start)


def spread(indices: list[int], count: int) -> list[int]:
    """``count`` of ``indices`` evenly spread over them (all of them when ``count`` is not smaller)."""
    if count >= len(indices):
        return list(indices)
    return [indices[int((k + 0.5) * len(indices) / count)] for k in range(count)]


def never_predicted(metrics: dict[str, Any]) -> list[str]:
    """Classes present in the validation truth that the model never predicted (no pixel at all)."""
    matrix = np.asarray(metrics.get("confusion_matrix", []), dtype=np.int64)
    names = list(metrics.get("per_class", {}))
    if matrix.ndim != 2 or len(names) != len(matrix):
        return []
    return [names[c] for c in range(len(names)) if matrix[c].sum() > 0 and matrix[:, c].sum() == 0]


def zero_iou_classes(metrics: dict[str, Any]) -> list[str]:
    """Classes whose validation IoU is exactly 0 (present in truth or prediction, never both)."""
    return [name for name, values in metrics.get("per_class", {}).items() if values.get("iou") == 0]


def validation_row(metrics: dict[str, Any], weights: str, seconds: float) -> dict[str, Any]:
    """The ``history`` columns of one validation: mIoU, mDice, pixel accuracy, IoU per class, weights, seconds."""
    row = {
        "val_mIoU": metrics["mIoU"],
        "val_mDice": metrics["mDice"],
        "val_pixel_accuracy": metrics["pixel_accuracy"],
        "val_weights": weights,
        "val_seconds": seconds,
    }
    row.update({f"val_iou_{name}": values["iou"] for name, values in metrics["per_class"].items()})
    return row
