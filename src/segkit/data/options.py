"""How a dataset folder is read beyond its layout: the options ``segkit train`` declares and ``inspect``,
``evaluate``, ``report``, ``audit`` and ``export --quantize`` share (file patterns, regions, label maps,
classes, splits ...); and the options of the commands that inspect or write data (``segkit inspect``,
``segkit show``, ``segkit convert``).

Each option several commands take is declared once here, as a field factory (``--classes``,
``--ignore-index``, ``--split``, ``--val-split`` and the read options), and used by
:class:`~segkit.config.TrainConfig`, by :class:`ReadOptions` (the commands that read
labelled data) and by the commands' own option classes. This module imports nothing heavy,
so a command's parser can read it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from segkit.errors import OptionError
from segkit.options import nested, option


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


def roi_masks_option(
    help: str = "region-of-interest masks (folder or {id} pattern): pixels where they are 0 are ignored in "
    "training, validation and evaluation",
    group: str = "data",
) -> Any:
    """``--roi-masks`` (``segkit predict`` says what it does to the inputs' predictions in its own ``help``)."""
    return option(None, help=help, group=group, metavar="DIR|PATTERN")


def label_map_option(group: str = "data") -> Any:
    """``--label-map``."""
    return option(
        None,
        help="labelme labels to classes: a YAML or JSON file of 'label: class' (regular expressions allowed, "
        "e.g. 'bottle[_ ]?\\d+: bottle'); segkit inspect suggests one for labels numbered per object",
        group=group,
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


def fit_masks_option(action: str | None = None) -> Any:
    """``--fit-masks`` (``action="store_true"``: without a ``--no-fit-masks`` form)."""
    return option(
        False,
        help="resize (nearest) masks that are scaled copies of their images (same aspect ratio within 1%) "
        "to the image size as they are read",
        group="data",
        parse=bool,
        action=action,
    )


def colors_option(group: str = "data") -> Any:
    """``--colors``."""
    return option(None, help="colour table (JSON or CSV) of RGB colour-coded masks", group=group, metavar="FILE")


def overwrite_option(help: str = "replace a non-empty OUT once the new one is done") -> Any:
    """``--overwrite`` of the commands that write a folder (a switch)."""
    return option(False, help=help, action="store_true")


def classes_option(
    help: str = "class names: a file (txt, json, csv) or a,b,c", metavar: str = "FILE|a,b", group: str = "data"
) -> Any:
    """``--classes``: the class names in index order, as :func:`segkit.data.classes.read_class_list` reads them.

    ``help`` says what the command does with them (``segkit evaluate --pred`` reads them differently).
    """
    return option(None, help=help, group=group, metavar=metavar)


def ignore_index_option(
    default: int | None = 255, help: str = "mask value of unlabelled pixels", group: str = "options"
) -> Any:
    """``--ignore-index``: the mask value of unlabelled pixels (left out of the loss and the metrics)."""
    return option(default, help=help, parse=int, metavar="V", group=group)


def split_option(default: str) -> Any:
    """``--split``: which split of a dataset with splits is read; ``default`` says which when it is not given."""
    return option(
        None, help=f"split sub-folder or VOC ImageSets list (default: {default})", group="data", metavar="NAME"
    )


def val_split_option(default: float | None, help: str, group: str = "data") -> Any:
    """``--val-split``: the share held out for validation, by name (checked by :func:`val_split_problem`).

    ``train`` holds that share out; ``evaluate`` and ``report`` score only the images it held out.
    """
    return option(default, help=help, parse=float, metavar="F", group=group)


def val_split_problem(value: float | None) -> str | None:
    """What is wrong with a ``--val-split`` value (``None``: not given, or nothing)."""
    if value is not None and not 0.0 <= value < 1.0:
        return f"--val-split must be in [0, 1), not {value}"
    return None


@dataclass(frozen=True)
class ReadOptions:
    """The read options of the commands that read labelled data besides ``train`` (``--skip-bad`` is train's)."""

    images: str | None = images_option()
    masks: str | None = masks_option()
    roi_masks: str | None = roi_masks_option()
    label_map: str | None = label_map_option()
    fit_masks: bool = fit_masks_option(action="store_true")
    colors: str | None = colors_option()


# Keywords of :func:`segkit.data.sources.open_source` that say how a labelled folder is read (the command
# line's read options and ``--classes``): functions that pass them on take them as ``**read``.
READ_KEYWORDS = ("images", "masks", "roi_masks", "label_map", "fit_masks", "colors", "classes")


def read_options(options: dict[str, Any]) -> dict[str, Any]:
    """Take the :class:`ReadOptions` keywords out of ``options`` (a function's ``**options``) and return them."""
    return {item.name: options.pop(item.name) for item in fields(ReadOptions) if item.name in options}


@dataclass(frozen=True)
class InspectOptions:
    """``segkit inspect``'s options, by :func:`segkit.inspect`'s keyword names (checked when made).

    Raises:
        OptionError: ``sheet_count`` below 1.
    """

    classes: Any = classes_option(
        help="class names in index order: a,b,c or a file (.txt one per line, .json list or colour table, .csv)",
        group="options",
    )
    ignore_index: int = ignore_index_option()
    split: str | None = split_option("the training split")
    read: ReadOptions = nested(ReadOptions, flat=True)
    sheet: str | Path | None = option(
        None,
        help="also draw a contact sheet (PNG/JPEG): images beside their masks over them, "
        "with a legend, to see at a glance whether masks line up with images",
        metavar="FILE",
    )
    sheet_count: int = option(16, help="images on the sheet", parse=int, metavar="N")

    def __post_init__(self) -> None:
        if self.sheet_count < 1:
            raise OptionError(f"--sheet-count must be at least 1, not {self.sheet_count}")


@dataclass(frozen=True)
class ShowOptions:
    """``segkit show``'s options, by :func:`segkit.show`'s keyword names (checked when made).

    Raises:
        OptionError: ``alpha`` outside ``[0, 1]``.
    """

    out: str | None = option(None, help="output folder (default: beside each mask)", metavar="DIR")
    overlay: str | None = option(
        None,
        help="image to blend the colours onto: a file, or a folder holding an image with each mask's name",
        metavar="IMAGE",
    )
    alpha: float = option(0.5, help="overlay opacity of the colours", parse=float)
    colors: str | None = colors_option(group="options")

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError(f"--alpha must be between 0 and 1, not {self.alpha}")


@dataclass(frozen=True)
class ConvertLabelmeOptions:
    """``segkit convert labelme``'s options, by :func:`segkit.convert_labelme`'s keyword names."""

    classes: Any = option(
        None,
        help="class names in index order, as for every command: a file (labels.txt: one per line, __ignore__ "
        "skipped; JSON; CSV) or a comma list; _background_ is put first when no background is named; "
        "default: a labels.txt in SRC, else all labels found, sorted, _background_ first",
        metavar="FILE|a,b,c",
        aliases=("--labels",),
    )
    label_map: str | None = label_map_option(group="options")
    noviz: bool = option(False, help="do not write visualization/ overlays", action="store_true")
    overwrite: bool = overwrite_option()


@dataclass(frozen=True)
class ConvertMasksOptions:
    """``segkit convert masks``'s own options (beside ``split`` and the read options), by :func:`segkit.convert_masks`'s names."""

    classes: Any = classes_option(
        help="class names in index order, as segkit train --classes", metavar="FILE|a,b,c", group="options"
    )
    ignore_index: int = ignore_index_option()
    overwrite: bool = overwrite_option()
