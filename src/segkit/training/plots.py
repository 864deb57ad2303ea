"""Pictures of a training run: loss and mIoU curves, and sample predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.io import atomic_write, write_image
from segkit.training.callbacks import ValidationSamples
from segkit.visualize import colorize


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    """Write ``curves.png``: training loss per epoch and validation mIoU where it was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    validated = [row for row in history if row.get("val_mIoU") is not None]
    figure, (loss_axis, miou_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="Training loss")
    miou_axis.plot([row["epoch"] for row in validated], [row["val_mIoU"] for row in validated], marker="o",
                   color="tab:green")
    miou_axis.set(xlabel="epoch", ylabel="mIoU", title="Validation mIoU", ylim=(0, 1))
    for axis in (loss_axis, miou_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, dpi=100, format="png"))
    plt.close(figure)


def sample_grid(samples: ValidationSamples, palette: np.ndarray | None = None, height: int = 160) -> np.ndarray:
    """Rows of ``image | truth | prediction``, each row scaled to ``height`` pixels (samples differ in size)."""
    import cv2

    rows = []
    for image, truth, prediction in zip(samples.images, samples.truths, samples.predictions):
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        parts = [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)]
        for mask in (truth, prediction):
            parts.append(cv2.resize(colorize(mask, palette), (width, height), interpolation=cv2.INTER_NEAREST))
        gap = np.full((height, 4, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([parts[0], gap, parts[1], gap, parts[2]], axis=1))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    separator = np.full((4, width, 3), 255, dtype=np.uint8)
    stacked = [part for row in rows for part in (row, separator)][:-1]
    return np.concatenate(stacked, axis=0)


def save_samples(path: str | Path, samples: ValidationSamples, palette: np.ndarray | None = None) -> None:
    """Write the sample grid of :func:`sample_grid`."""
    write_image(path, sample_grid(samples, palette))
