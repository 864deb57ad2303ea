"""Pictures of a training run: loss and mIoU curves, and sample predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.io import atomic_write, write_image
from segkit.visualize import colorize


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    """Write ``curves.png``: train/val loss and validation mIoU per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, miou_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    loss_axis.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_axis.legend()
    miou_axis.plot(epochs, [row["val_mIoU"] for row in history], marker="o", color="tab:green")
    miou_axis.set(xlabel="epoch", ylabel="mIoU", title="Validation mIoU", ylim=(0, 1))
    for axis in (loss_axis, miou_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, dpi=100, format="png"))
    plt.close(figure)


def sample_grid(
    images: np.ndarray, truths: np.ndarray, predictions: np.ndarray, palette: np.ndarray | None = None
) -> np.ndarray:
    """Rows of ``image | truth | prediction`` from uint8 (N, H, W, 3) images and (N, H, W) masks."""
    gap = np.full((images.shape[1], 4, 3), 255, dtype=np.uint8)
    rows = [
        np.concatenate([image, gap, colorize(truth, palette), gap, colorize(prediction, palette)], axis=1)
        for image, truth, prediction in zip(images, truths, predictions)
    ]
    separator = np.full((4, rows[0].shape[1], 3), 255, dtype=np.uint8)
    stacked = [part for row in rows for part in (row, separator)][:-1]
    return np.concatenate(stacked, axis=0)


def save_samples(
    path: str | Path,
    images: np.ndarray,
    truths: np.ndarray,
    predictions: np.ndarray,
    palette: np.ndarray | None = None,
) -> None:
    write_image(path, sample_grid(images, truths, predictions, palette))
