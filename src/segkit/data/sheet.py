"""A contact sheet of a dataset: images beside their masks drawn over them, with a legend.

The quickest way to see the most common silent data bug, masks that do not line up with
their images (wrong pairing, flipped or resized masks, shifted labels): ``segkit inspect
DATA --sheet sheet.png``. The samples are spread evenly over the sorted dataset, each
shrunk to a tile, and the mask is blended onto the image in the dataset's own colours
(its colour table's, else :func:`segkit.data.classes.default_palette`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segkit.data.classes import background_index, default_palette
from segkit.data.io import write_image
from segkit.data.sources import DataSource
from segkit.errors import SegkitError
from segkit.visualize import fit_within, labelled_grid, legend, overlay

logger = logging.getLogger(__name__)

TILE_SIDE = 220  # each image (and its overlay) fits this many pixels
ALPHA = 0.55


def dataset_colours(source: DataSource) -> np.ndarray:
    """``(C, 3)`` uint8: the colour table's colour of each class, else the default palette."""
    colours = source.color_table.class_colors(source.num_classes) if source.color_table is not None else None
    return default_palette(source.classes) if colours is None else np.asarray(colours, dtype=np.uint8)


def sample_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``0..total-1`` (all of them when ``count >= total``)."""
    if count >= total:
        return list(range(total))
    return sorted({round(step * (total - 1) / max(count - 1, 1)) for step in range(count)})


def contact_sheet(source: DataSource, count: int = 16, *, columns: int = 4, tile_side: int = TILE_SIDE) -> np.ndarray:
    """The sheet as an ``(H, W, 3)`` uint8 RGB image.

    Args:
        source: an opened dataset (:func:`segkit.data.sources.open_source`).
        count: number of samples shown.
        columns: samples per row.
        tile_side: each image is shrunk to fit this many pixels.

    Raises:
        SegkitError: the dataset is empty, or none of the chosen samples can be read.
    """
    if not len(source):
        raise SegkitError(source.root, "no image/mask pairs to draw")
    colours = dataset_colours(source)
    background = background_index(source.classes)
    tiles, has_ignore, skipped = [], False, 0
    for index in sample_indices(len(source), count):
        try:
            sample = source.load(index)
        except SegkitError as error:  # `segkit inspect` lists it as a problem; the sheet shows the others
            logger.warning("contact sheet: skipped %s", error)
            skipped += 1
            continue
        image = fit_within(sample.image, tile_side)
        mask = fit_within(sample.mask, tile_side, nearest=True)
        has_ignore |= bool((mask == source.ignore_index).any())
        blended = overlay(image, np.where(mask == source.ignore_index, 255, mask), ALPHA, colours, background)
        tiles.append(labelled_grid([[image, blended]], row_titles=[sample.name], gap=4))
    if not tiles:
        raise SegkitError(source.root, f"none of the {skipped} samples chosen for the contact sheet could be read")
    rows = [tiles[start : start + columns] for start in range(0, len(tiles), columns)]
    width = sum(max(row[c].shape[1] for row in rows if c < len(row)) for c in range(len(rows[0]))) + 8 * (columns - 1)
    title = f"{source.root.name}: {len(tiles)} of {len(source)} images, each beside its mask drawn over it" + (
        f" ({skipped} unreadable)" if skipped else ""
    )
    footer = legend(source.classes, colours, width=max(width, 240), ignore=has_ignore)
    return labelled_grid(rows, title=title, footer=footer, center=False)


def write_contact_sheet(source: DataSource, path: str | Path, count: int = 16, **options: int) -> Path:
    """Draw :func:`contact_sheet` and write it (format from the suffix, atomically)."""
    write_image(path, contact_sheet(source, count, **options))
    return Path(path)
