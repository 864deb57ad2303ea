"""Validation that measures what the user gets: predictions at each image's original size.

Every validation image goes through :class:`segkit.prediction.predictor.Predictor` — the
code ``segkit predict`` runs, with the same resize policy, tiling and undo to the original
pixels — and is scored against its original, un-resized mask. The choice of ``best.pt`` is
made on that number, never on a score at the network's input size.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from segkit.checkpoint import ModelCard
from segkit.prediction.tiling import TileConfig
from segkit.training.callbacks import ValidationSamples

# Validation images predicted per forward pass (letterbox/resize; crop images go one by one).
VALIDATION_BATCH = 8
VALIDATION_TILING = TileConfig()  # how validation tiles large images (what its cost estimate counts too)


@dataclass
class ValidationResult:
    """One validation of one set of weights.

    Attributes:
        metrics: ``ConfusionMatrix.compute()`` over all validation images (all ranks).
        samples: the sample validation images with truth and prediction (main rank).
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
    sample_indices: Collection[int] = (),
) -> ValidationResult:
    """Score ``model`` on ``source``'s ``indices`` at original size (each rank takes every ``world_size``-th image).

    The confusion matrix is summed over ranks, so every rank gets the metrics a single
    process would compute; the images of ``sample_indices`` come back with their truth and
    prediction (:func:`covering_samples` chooses them). Leaves ``model`` in eval mode.
    """
    from segkit.evaluation.confusion import ConfusionMatrix
    from segkit.prediction.predictor import Predictor

    start = time.monotonic()
    predictor = Predictor(model, card, device=device, tiling=VALIDATION_TILING, batch_size=VALIDATION_BATCH)
    matrix = ConfusionMatrix(card.num_classes, ignore_index=card.ignore_index, class_names=card.classes)
    samples = ValidationSamples()
    mine = indices[rank::world_size]
    for begin in range(0, len(mine), VALIDATION_BATCH):
        loaded = [source.load(index) for index in mine[begin : begin + VALIDATION_BATCH]]
        predictions = predictor.predict_batch([np.asarray(sample.image) for sample in loaded])
        for index, sample, prediction in zip(mine[begin : begin + VALIDATION_BATCH], loaded, predictions):
            matrix.update(prediction, np.asarray(sample.mask))
            if index in sample_indices:
                samples.names.append(sample.name)
                samples.images.append(np.asarray(sample.image))
                samples.truths.append(np.asarray(sample.mask))
                samples.predictions.append(prediction)
    matrix.all_reduce()
    return ValidationResult(matrix.compute(), samples, time.monotonic() - start)


def covering_samples(source: Any, indices: list[int], count: int, ignore_index: int) -> list[int]:
    """``count`` of ``indices`` to show as sample images: together they hold every class their masks hold.

    Greedy set cover (each pick adds the most classes not shown yet), then evenly spread
    images for the rest: on a dataset sorted by class the first images would all show one.
    """
    if count <= 0:
        return []
    classes = {
        index: set(np.unique(np.asarray(source.load(index).mask)).tolist()) - {ignore_index} for index in indices
    }
    chosen: list[int] = []
    shown: set[int] = set()
    while len(chosen) < count:
        best = max(
            (index for index in indices if index not in chosen), key=lambda i: len(classes[i] - shown), default=None
        )
        if best is None or not classes[best] - shown:
            break
        chosen.append(best)
        shown |= classes[best]
    rest = [index for index in indices if index not in chosen]
    chosen += spread(rest, count - len(chosen))
    return sorted(chosen)


class SampleChoice:
    """The validation images shown as samples (:func:`covering_samples`), chosen once per set of scored images."""

    def __init__(self, source: Any, count: int, ignore_index: int) -> None:
        self.source, self.count, self.ignore_index = source, count, ignore_index
        self.scored: tuple[int, ...] | None = None
        self.chosen: list[int] = []

    def among(self, scored: list[int]) -> list[int]:
        """The sample images among the validation images ``scored``."""
        if self.scored != tuple(scored):
            self.chosen = covering_samples(self.source, list(scored), self.count, self.ignore_index)
            self.scored = tuple(scored)
        return self.chosen


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
