"""Training pictures: curves with whole-epoch ticks and the best epoch, sample grids with titles and a legend."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.plots import best_epoch_of, curves_figure, curves_png, plot_curves, sample_grid
from segkit.training.callbacks import ValidationSamples
from segkit.visualize import PAD_COLOR

HISTORY = [
    {"epoch": e, "train_loss": 1 / e, "val_mIoU": m, "val_mDice": m + 0.05}
    for e, m in zip(range(1, 6), (0.2, 0.5, 0.45, 0.5, float("nan")))
]


def test_best_epoch_is_the_first_highest_defined_miou() -> None:
    assert best_epoch_of(HISTORY) == 2
    assert best_epoch_of([{"epoch": 1, "train_loss": 1.0}]) is None


def test_curves_use_whole_epochs_and_mark_the_best(tmp_path: Path) -> None:
    figure = curves_figure(HISTORY)
    figure.canvas.draw()
    for axis in figure.axes:
        ticks = [tick for tick in axis.get_xticks() if 1 <= tick <= 5]
        assert ticks and all(float(tick).is_integer() for tick in ticks)
        best = [line.get_xdata()[0] for line in axis.lines if line.get_label().startswith("best")]
        assert best == [2]
    assert Image.open(io.BytesIO(curves_png(HISTORY))).size == (1000, 400)
    plot_curves(HISTORY, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves_png([{"epoch": 1, "train_loss": 0.5}])  # no validation yet: still drawn


def test_sample_grid_of_different_sizes_with_titles_and_legend(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = ValidationSamples()
    for name, (height, width) in (("wide", (40, 90)), ("tall", (700, 300))):
        samples.names.append(name)
        samples.images.append(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        truth = rng.integers(0, 3, (height, width), dtype=np.uint8)
        truth[:5] = 255
        samples.truths.append(truth)
        samples.predictions.append(rng.integers(0, 3, (height, width), dtype=np.uint8))
    palette = np.array([[0, 0, 0], [10, 200, 30], [200, 20, 220]], np.uint8)
    grid = sample_grid(
        samples.images,
        samples.truths,
        samples.predictions,
        palette,
        classes=["bg", "a", "b"],
        names=samples.names,
        epoch=3,
    )
    plain = sample_grid(samples.images, samples.truths, samples.predictions, palette)
    assert grid.shape[0] > plain.shape[0]  # title, captions and legend take room
    assert max(grid.shape[:2]) < 1200  # the tall sample is shrunk
    assert tuple(grid[0, 0]) == tuple(grid[-1, -1]) == PAD_COLOR  # one padding colour
    pixels = grid.reshape(-1, 3)
    for colour in ([10, 200, 30], [200, 20, 220], [255, 255, 255]):  # classes and ignore, in masks and legend
        assert (pixels == colour).all(axis=1).any()
