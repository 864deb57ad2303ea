"""Drawing helpers: legends and labelled grids."""

from __future__ import annotations

import numpy as np

from segkit.visualize import PAD_COLOR, fit_within, labelled_grid, legend


def test_legend_wraps_to_the_width_and_shows_every_colour() -> None:
    classes = [f"class number {index}" for index in range(12)]
    colours = np.stack([np.full(3, 20 * index, np.uint8) + [0, 5, 9] for index in range(12)]).astype(np.uint8)
    one_row = legend(classes[:2], colours[:2])
    wrapped = legend(classes, colours, width=300, ignore=True)
    assert wrapped.shape[1] == 300 and wrapped.shape[0] > 3 * one_row.shape[0]
    pixels = wrapped.reshape(-1, 3)
    for colour in [*colours.tolist(), [255, 255, 255]]:
        assert (pixels == colour).all(axis=1).any()


def test_grid_centres_cells_of_any_size() -> None:
    red = np.full((10, 20, 3), (255, 0, 0), np.uint8)
    blue = np.full((30, 8, 3), (0, 0, 255), np.uint8)
    grid = labelled_grid([[red, blue], [blue]], gap=2)
    assert grid.shape == (2 + 30 + 2 + 30 + 2, 2 + 20 + 2 + 8 + 2, 3)
    assert tuple(grid[2 + 10, 2]) == (255, 0, 0) and tuple(grid[2, 2]) == PAD_COLOR  # red centred in a 30-high row
    top = labelled_grid([[red, blue]], gap=2, center=False)
    assert tuple(top[2, 2]) == (255, 0, 0)


def test_fit_within_only_shrinks() -> None:
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert fit_within(mask, 10) is mask
    assert fit_within(np.zeros((400, 200, 3), np.uint8), 100).shape == (100, 50, 3)
    assert set(np.unique(fit_within(np.tile(mask, (50, 50)), 40, nearest=True))) <= set(range(12))
