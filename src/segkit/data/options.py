"""How a dataset folder is read beyond its layout: the options ``segkit train`` declares and ``inspect``,
``evaluate``, ``report`` and ``export --quantize`` share (file patterns, regions, label maps, bad files ...).

Each option is declared once here, as a field factory, and used by
:class:`~segkit.config.TrainConfig` and by :class:`ReadOptions` (the commands that read
labelled data). This module imports nothing heavy, so a command's parser can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segkit.options import option


def images_option() -> Any:
    """``--images``."""
    return option(
        None,
        help="the images: a folder name (default images/) or a file name pattern with {id}, e.g. "
        "'images/{id}_training.tif'",
        group="data",
        metavar="DIR|PATTERN",
    )


def masks_option() -> Any:
    """``--masks``."""
    return option(
        None,
        help="the masks: a folder name (e.g. masks_rgb; default masks/) or a file name pattern with {id}, e.g. "
        "'1st_manual/{id}_manual1.gif' (paired with the images by id)",
        group="data",
        metavar="DIR|PATTERN",
    )


def roi_masks_option() -> Any:
    """``--roi-masks``."""
    return option(
        None,
        help="region-of-interest masks (folder or {id} pattern): pixels where they are 0 are ignored in "
        "training, validation and evaluation",
        group="data",
        metavar="DIR|PATTERN",
    )


def label_map_option() -> Any:
    """``--label-map``."""
    return option(
        None,
        help="labelme labels to classes: a YAML or JSON file of 'label: class' (regular expressions allowed, "
        "e.g. 'bottle[_ ]?\\d+: bottle'); segkit inspect suggests one for labels numbered per object",
        group="data",
        metavar="FILE",
    )


def skip_bad_option() -> Any:
    """``--skip-bad``."""
    return option(
        False,
        help="leave out samples whose files cannot be read or do not fit together (said with a count); "
        "without it they are all listed at once and nothing trains",
        group="data",
        parse=bool,
    )


def fit_masks_option() -> Any:
    """``--fit-masks``."""
    return option(
        False,
        help="resize (nearest) masks that are scaled copies of their images (same aspect ratio within 1%) "
        "to the image size as they are read",
        group="data",
        parse=bool,
    )


def colors_option() -> Any:
    """``--colors``."""
    return option(None, help="colour table (JSON or CSV) of RGB colour-coded masks", group="data", metavar="FILE")


@dataclass(frozen=True)
class ReadOptions:
    """The read options of the commands that read labelled data besides ``train`` (``--skip-bad`` is train's)."""

    images: str | None = images_option()
    masks: str | None = masks_option()
    roi_masks: str | None = roi_masks_option()
    label_map: str | None = label_map_option()
    fit_masks: bool = fit_masks_option()
    colors: str | None = colors_option()


# Keywords of :func:`segkit.data.sources.open_source` that say how a labelled folder is read (the command
# line's read options and ``--classes``): functions that pass them on take them as ``**read``.
READ_KEYWORDS = ("images", "masks", "roi_masks", "label_map", "fit_masks", "colors", "classes")
