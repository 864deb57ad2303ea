"""Segmentation metrics: the public import path (``from segkit.metrics import ...``).

Everything here is computed exactly from one confusion matrix; see
:mod:`segkit.evaluation.metrics` for the definitions.
"""

from __future__ import annotations

from segkit.evaluation.confusion import ConfusionMatrix, compute_iou, confusion_matrix
from segkit.evaluation.folders import evaluate_folders
from segkit.evaluation.metrics import METRIC_KEYS, class_iou, compute_metrics
from segkit.evaluation.report import format_table, write_json
from segkit.files import to_json_safe

__all__ = [
    "METRIC_KEYS",
    "ConfusionMatrix",
    "class_iou",
    "compute_iou",
    "compute_metrics",
    "confusion_matrix",
    "evaluate_folders",
    "format_table",
    "to_json_safe",
    "write_json",
]
