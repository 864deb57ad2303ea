"""Segmentation metrics, all computed exactly from one confusion matrix.

For class ``c`` of a ``C x C`` matrix ``cm`` (rows truth, columns prediction):
``TP = cm[c, c]``, ``FP`` = column sum - TP, ``FN`` = row sum - TP,
``TN`` = total - TP - FP - FN. Every ratio whose denominator is 0 is NaN
(``null`` in JSON) and every mean is taken over the classes where it is defined.
A class absent from both truth and prediction (TP + FP + FN = 0) is left out of
every mean, specificity included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_KEYS = (
    "pixel_accuracy",
    "mean_class_accuracy",
    "mIoU",
    "fwIoU",
    "mDice",
    "mean_precision",
    "mean_recall",
    "mean_specificity",
    "per_class",
    "confusion_matrix",
    "num_images",
    "num_classes",
    "classes_absent",
    "num_pixels",
)


def _as_matrix(cm: Any) -> np.ndarray:
    """The matrix (numpy array, torch tensor on any device, nested lists) as int64 numpy, checked."""
    if hasattr(cm, "detach"):  # a torch tensor
        cm = cm.detach().cpu().numpy()
    matrix = np.asarray(cm).astype(np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square C x C, got shape {tuple(matrix.shape)}")
    if (matrix < 0).any():
        raise ValueError("confusion matrix holds negative counts")
    return matrix


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with NaN where the denominator is 0."""
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _mean(values: np.ndarray, keep: np.ndarray) -> float:
    """Mean of the defined (non-NaN) values where ``keep``; NaN when there are none."""
    kept = values[keep & ~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def _counts(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class TP, FP, FN, TN as float64 (exact below 2**53 pixels)."""
    counts = matrix.astype(np.float64)
    tp = counts.diagonal().copy()
    fp = counts.sum(axis=0) - tp
    fn = counts.sum(axis=1) - tp
    tn = counts.sum() - tp - fp - fn
    return tp, fp, fn, tn


def class_iou(cm: Any) -> np.ndarray:
    """Per-class IoU ``TP / (TP + FP + FN)``, float64, NaN for classes absent from both."""
    tp, fp, fn, _ = _counts(_as_matrix(cm))
    return _ratio(tp, tp + fp + fn)


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(index) for index in range(num_classes)]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for a {num_classes}-class confusion matrix")
    if len(set(names)) != len(names):
        raise ValueError(f"class names are not unique: {names}")
    return names


def compute_metrics(
    cm: Any,
    class_names: Sequence[str] | None = None,
    num_images: int | None = None,
) -> dict[str, Any]:
    """Every segkit metric from a confusion matrix.

    Args:
        cm: ``(C, C)`` pixel counts, rows truth, columns prediction (numpy array, torch
            tensor or nested lists).
        class_names: ``C`` unique names (default ``"0"``, ``"1"``, ...).
        num_images: number of images counted, reported as is.

    Returns:
        A dict with the keys of ``METRIC_KEYS``: summary floats, ``per_class``
        (name -> iou, dice, precision, recall, specificity, support),
        ``confusion_matrix`` as a list of lists of ints, ``classes_absent`` (names
        of classes absent from both truth and prediction) and counts. Undefined
        values are NaN; pass the dict through :func:`to_json_safe` for JSON.
    """
    matrix = _as_matrix(cm)
    names = _class_names(class_names, matrix.shape[0])
    tp, fp, fn, tn = _counts(matrix)
    total = float(matrix.sum())
    present = (tp + fp + fn) > 0
    per_class = {
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }
    iou = per_class["iou"]
    frequency = (tp + fn) / total if total > 0 else np.full_like(tp, np.nan)
    defined_iou = ~np.isnan(iou)
    fw_iou = float((frequency[defined_iou] * iou[defined_iou]).sum()) if defined_iou.any() else math.nan
    mean_recall = _mean(per_class["recall"], present)
    support = matrix.sum(axis=1)
    return {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
        "mean_class_accuracy": mean_recall,
        "mIoU": _mean(iou, present),
        "fwIoU": fw_iou,
        "mDice": _mean(per_class["dice"], present),
        "mean_precision": _mean(per_class["precision"], present),
        "mean_recall": mean_recall,
        "mean_specificity": _mean(per_class["specificity"], present),
        "per_class": {
            name: {
                **{metric: float(values[index]) for metric, values in per_class.items()},
                "support": int(support[index]),
            }
            for index, name in enumerate(names)
        },
        "confusion_matrix": matrix.tolist(),
        "num_images": None if num_images is None else int(num_images),
        "num_classes": len(names),
        "classes_absent": [name for index, name in enumerate(names) if not present[index]],
        "num_pixels": int(total),
    }
