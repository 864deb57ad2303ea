"""Human-readable table and JSON file of a metrics dict from ``compute_metrics``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from segkit.files import atomic_write, to_json_safe

_COLUMNS = ("iou", "dice", "precision", "recall", "specificity")
_SUMMARY = (
    ("pixel accuracy", "pixel_accuracy"),
    ("mean class accuracy", "mean_class_accuracy"),
    ("mIoU", "mIoU"),
    ("fwIoU", "fwIoU"),
    ("mDice", "mDice"),
    ("mean precision", "mean_precision"),
    ("mean recall", "mean_recall"),
    ("mean specificity", "mean_specificity"),
)


def _number(value: float | None) -> str:
    """Four decimals, or ``-`` for an undefined (NaN/None) value."""
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def format_table(metrics: dict[str, Any]) -> str:
    """The per-class table and summary lines of a metrics dict, ready to print."""
    names = list(metrics["per_class"])
    width = max([len("class"), *(len(name) for name in names)])
    header = f"{'class':<{width}}  " + "  ".join(f"{column:>11}" for column in _COLUMNS) + f"  {'support':>12}"
    lines = [header, "-" * len(header)]
    for name, row in metrics["per_class"].items():
        cells = "  ".join(f"{_number(row[column]):>11}" for column in _COLUMNS)
        lines.append(f"{name:<{width}}  {cells}  {row['support']:>12}")
    lines.append("")
    label_width = max(len(label) for label, _ in _SUMMARY)
    lines += [f"{label:<{label_width}}  {_number(metrics[key])}" for label, key in _SUMMARY]
    images = metrics.get("num_images")
    counted = f"{images} images, " if images is not None else ""
    lines.append(f"{counted}{metrics['num_pixels']} labelled pixels, {metrics['num_classes']} classes")
    absent = metrics["classes_absent"]
    if absent:
        lines.append(
            f"{len(absent)} classes absent from truth and prediction, left out of the means: " + ", ".join(absent)
        )
    return "\n".join(lines)


def write_json(metrics: dict[str, Any], path: str | Path) -> None:
    """Write the metrics as indented JSON (NaN as ``null``), atomically."""
    text = json.dumps(to_json_safe(metrics), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))
