"""Pictures of a training run: loss and metric curves, and sample predictions."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segkit.files import atomic_write
from segkit.visualize import PALETTE, colorize, fit_within, labelled_grid, legend

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAMPLE_COLUMNS = ("image", "truth", "prediction")
SAMPLE_MAX_SIDE = 320  # sample images are shrunk to this many pixels on their longer side


def best_epoch_of(history: Sequence[dict[str, Any]], metric: str = "val_mIoU") -> int | None:
    """The epoch with the highest defined ``metric`` (the first one on ties), or None."""
    scored = [(row[metric], -row["epoch"]) for row in history if _defined(row.get(metric))]
    return -max(scored)[1] if scored else None


def _defined(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Epochs and values of ``key`` where it is defined (validation may be skipped in some epochs)."""
    points = [(row["epoch"], float(row[key])) for row in history if _defined(row.get(key))]
    return [epoch for epoch, _ in points], [value for _, value in points]


def curves_figure(history: Sequence[dict[str, Any]], best_epoch: int | None = None) -> Figure:
    """Two panels: train/validation loss, and validation mIoU/mDice per epoch.

    Epoch ticks are whole numbers; the best epoch (default: highest validation mIoU)
    is marked on both panels.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    best = best_epoch_of(history) if best_epoch is None else best_epoch
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axis, metric_axis = figure.subplots(1, 2)
    for axis, keys, title, ylabel in (
        (loss_axis, (("train_loss", "train"),), "Training loss", "loss"),
        (metric_axis, (("val_mIoU", "mIoU"), ("val_mDice", "mDice")), "Validation metrics", "score"),
    ):
        for key, label in keys:
            epochs, values = _series(history, key)
            if epochs:
                axis.plot(epochs, values, marker="o", markersize=3, label=label)
        axis.set(xlabel="epoch", ylabel=ylabel, title=title)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if best is not None:
            axis.axvline(best, color="tab:red", linestyle="--", linewidth=1, label=f"best (epoch {best})")
        if axis.lines:
            axis.legend(loc="best", fontsize="small")
    metric_axis.set_ylim(0, 1)
    best_row = next((row for row in history if row["epoch"] == best), None)
    if best_row is not None and _defined(best_row.get("val_mIoU")):
        metric_axis.plot([best], [best_row["val_mIoU"]], marker="*", markersize=12, color="tab:red", zorder=3)
        metric_axis.annotate(
            f"{best_row['val_mIoU']:.3f}",
            (best, best_row["val_mIoU"]),
            textcoords="offset points",
            xytext=(4, 6),
            color="tab:red",
            fontsize="small",
        )
    return figure


def curves_png(history: Sequence[dict[str, Any]], best_epoch: int | None = None, dpi: int = 100) -> bytes:
    """:func:`curves_figure` as PNG bytes."""
    buffer = io.BytesIO()
    curves_figure(history, best_epoch).savefig(buffer, dpi=dpi, format="png")
    return buffer.getvalue()


def race_figure(race: dict[str, Any]) -> Figure:
    """The planning race: each candidate's validation score against its seconds, the winner drawn thick."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.5), layout="constrained")
    axis = figure.subplots()
    for index, entry in enumerate(race.get("entries", [])):
        points = [(rung["seconds"], rung["score"]) for rung in entry["rungs"] if _defined(rung.get("score"))]
        if not points:
            continue
        won = index == race.get("winner")
        axis.plot(
            [0.0] + [seconds for seconds, _ in points],
            [0.0] + [score for _, score in points],
            marker="o",
            markersize=4,
            linewidth=2.5 if won else 1.2,
            label=entry["label"] + (" (won)" if won else ""),
        )
    axis.set(xlabel="seconds of the candidate (building, training, scoring)", ylabel="validation mIoU")
    axis.set_title("Planning race")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    if axis.lines:
        axis.legend(loc="best", fontsize="small")
    return figure


def race_png(race: dict[str, Any], dpi: int = 100) -> bytes:
    """:func:`race_figure` as PNG bytes."""
    buffer = io.BytesIO()
    race_figure(race).savefig(buffer, dpi=dpi, format="png")
    return buffer.getvalue()


def plot_curves(history: list[dict[str, Any]], path: str | Path, best_epoch: int | None = None) -> None:
    """Write ``curves.png`` (see :func:`curves_png`) atomically."""
    image = curves_png(history, best_epoch)
    atomic_write(path, lambda temp: temp.write_bytes(image))


def sample_grid(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    palette: np.ndarray | None = None,
    *,
    classes: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    epoch: int | None = None,
    ignore_index: int = 255,
    max_side: int = SAMPLE_MAX_SIDE,
) -> np.ndarray:
    """Rows of ``image | truth | prediction`` under column titles, with the epoch and a legend.

    Args:
        images: ``(H, W, 3)`` uint8 RGB images (sizes may differ from sample to sample).
        truths: ``(H, W)`` uint8 true masks (the ignore value is drawn white).
        predictions: ``(H, W)`` uint8 predicted masks.
        palette: RGB colour per class (default: the VOC palette).
        classes: class names; with them a legend in the palette's colours is drawn.
        names: a caption per sample.
        epoch: shown as the title.
        ignore_index: mask value drawn white (and listed in the legend when present).
        max_side: each sample is shrunk to fit this many pixels.

    Returns:
        ``(H, W, 3)`` uint8 RGB, gaps and padding in :data:`segkit.visualize.PAD_COLOR`.
    """
    colours = PALETTE.copy()
    if palette is not None:
        given = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:ignore_index]
        colours[: len(given)] = given
    colours[ignore_index] = PALETTE[255]
    rows = [
        [
            fit_within(image, max_side),
            *(colorize(fit_within(mask, max_side, nearest=True), colours) for mask in (truth, prediction)),
        ]
        for image, truth, prediction in zip(images, truths, predictions)
    ]
    footer = None
    if classes is not None:
        has_ignore = any(bool((np.asarray(mask) == ignore_index).any()) for mask in (*truths, *predictions))
        width = sum(max(row[c].shape[1] for row in rows) for c in range(3)) + 4 * 8 - 16
        footer = legend(classes, colours[: len(classes)], width=max(width, 200), ignore=has_ignore)
    return labelled_grid(
        rows,
        column_titles=SAMPLE_COLUMNS,
        row_titles=list(names) if names else (),
        title="" if epoch is None else f"epoch {epoch}",
        footer=footer,
    )
