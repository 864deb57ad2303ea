"""Class lists: reading them, naming their origin, and which class is the background.

The one home for the rules every command shares (``train``, ``evaluate``, ``inspect``,
``convert``, the model card), so the same ``--classes`` gives the same list everywhere:

- a Python list, or a comma list ``"a,b,c"``: the names as given;
- a ``.txt`` file (or any other suffix): one name per line; blank lines and labelme's
  ``__ignore__`` line are skipped;
- a ``.json`` file: a list of names, ``{"classes": [names]}``, or a colour table
  (:mod:`segkit.data.colors`, e.g. a dataset's ``classes.json``);
- a ``.csv`` file: one name per row (a ``name`` header allowed), or a colour table
  ``name,r,g,b[,index]``.

Names lose surrounding spaces; an empty name (outside blank lines), a name with a
control character (a line break, a tab) or a repeated name is an error naming the
source. A class is the *background* only when it is named so, never merely because it
has index 0 (an aerial dataset's class 0 may be "Building").
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segkit.data.colors import ColorTable, color_table_from_json, color_table_from_rows, csv_rows
from segkit.data.io import read_json, read_text
from segkit.errors import SegkitError
from segkit.visualize import PALETTE

# Names that mark a background class (compared case-insensitively, surrounding space ignored).
BACKGROUND_NAMES = frozenset({"background", "_background_", "__background__", "bg"})
BACKGROUND_LABEL = "_background_"  # labelme's spelling, added when a labelme list names no background
IGNORE_LABEL = "__ignore__"  # labelme's label (and class-list line) for pixels that are ignored
# Class files looked for in a dataset folder, in this order.
CLASS_FILES = ("class_names.txt", "labels.txt", "label_names.txt", "classes.txt", "classes.json")
LABELME_CLASS_FILES = CLASS_FILES[:-1]  # beside labelme annotations a .json is an annotation, not a list
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
_CSV_HEADERS = frozenset({"name", "names", "class", "classes", "label", "labels"})
_FORBIDDEN = frozenset({"Cc", "Zl", "Zp"})  # control characters, line and paragraph separators


@dataclass(frozen=True)
class ClassList:
    """Class names in index order and where they came from.

    Attributes:
        names: one name per class index.
        origin: where the names came from, for people: ``"class_names.txt"``,
            ``"--classes"``, ``"classes.json colour table"``, ``"VOC names"``,
            ``"0/255 masks"``, ``"values found"``, ``"labels found"`` ...
        path: the file read, if any (named in errors).
        color_table: the colour table the names came from, if they came from one.
    """

    names: list[str]
    origin: str
    path: Path | None = None
    color_table: ColorTable | None = None


def is_background_name(name: str) -> bool:
    """Whether ``name`` names a background class (``background``, ``_background_``, ``bg`` ...)."""
    return name.strip().lower() in BACKGROUND_NAMES


def background_index(classes: Sequence[str]) -> int | None:
    """Index of the first class named as background, or ``None`` when no class is."""
    return next((index for index, name in enumerate(classes) if is_background_name(name)), None)


def clean_class_name(name: str, source: str | Path | None, where: str = "class name") -> str:
    """``name`` without surrounding spaces; ``where`` says which name it is in errors.

    Raises:
        SegkitError: (naming ``source``) the name is empty or holds a control character
            such as a line break, which no class file could hold.
    """
    cleaned = name.strip()
    if not cleaned:
        raise SegkitError(source, f"{where} is empty")
    if any(unicodedata.category(char) in _FORBIDDEN for char in cleaned):
        raise SegkitError(source, f"{where} {name!r} holds a line break or control character")
    return cleaned


def clean_class_names(names: Iterable[object], source: str | Path | None, skip_blank: bool = False) -> list[str]:
    """Checked class names: spaces trimmed, ``__ignore__`` dropped, no empty or repeated name.

    Args:
        names: the names as listed.
        source: the file or option they came from (named in errors).
        skip_blank: leave out blank entries (lines of a text file, ``a,,b``) instead of refusing them.

    Raises:
        SegkitError: an empty name (unless skipped), a control character, a repeated
            name, or no name at all.
    """
    cleaned = []
    for position, raw in enumerate(names, start=1):
        if skip_blank and not str(raw).strip():
            continue
        name = clean_class_name(str(raw), source, f"class name {position}")
        if name != IGNORE_LABEL:
            cleaned.append(name)
    if not cleaned:
        raise SegkitError(source, "no class names (expected one name per line, a JSON list or a,b,c)")
    repeated = sorted(name for name, count in Counter(cleaned).items() if count > 1)
    if repeated:
        raise SegkitError(source, f"class names repeated: {', '.join(repeated)}")
    return cleaned


def read_class_list(
    spec: Sequence[str] | str | Path, *, ignore_index: int = 255, option: str = "--classes"
) -> ClassList:
    """Class names from what a user gave: a list, ``"a,b,c"``, or a class file (see the module docstring).

    A string is a file when such a file exists, a comma list when it holds a comma,
    else one name (or, when it looks like a path, a missing file).

    Args:
        spec: the list, comma list or file.
        ignore_index: the ignore value; a colour table's entry with it is no class.
        option: the option the list was given with, recorded in the origin (``--classes``).

    Raises:
        SegkitError: missing or unreadable file, or a bad list (see :func:`clean_class_names`).
    """
    if not isinstance(spec, (str, Path)):
        return ClassList(clean_class_names(spec, option), option)
    path = Path(spec)
    if path.is_file():
        found = read_class_file(path, ignore_index=ignore_index)
        return replace(found, origin=f"{option} {found.origin}")
    text = str(spec)
    if "," in text:
        return ClassList(clean_class_names(text.split(","), option, skip_blank=True), option)
    if path.suffix or "/" in text or "\\" in text:
        raise SegkitError(path, "class list file not found")
    return ClassList(clean_class_names([text], option), option)


def read_class_file(path: str | Path, *, ignore_index: int = 255) -> ClassList:
    """Class names from a .txt, .json or .csv file (see the module docstring); the file is read once.

    Raises:
        SegkitError: naming the file when it is unreadable, not UTF-8, malformed or a bad list.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = read_json(path, "class list")
        if isinstance(data, dict) and "classes" in data and not isinstance(data["classes"], list):
            raise SegkitError(path, "'classes' must be a list of names or of {name, rgb} entries")
        listed = data.get("classes") if isinstance(data, dict) else data
        if isinstance(listed, list) and any(isinstance(name, str) for name in listed):
            odd = next((item for item in listed if not isinstance(item, str)), None)
            if odd is not None:
                raise SegkitError(path, f"a list of class names holds {odd!r}, not a name")
            return ClassList(clean_class_names(listed, path), path.name, path)
        if listed == []:
            raise SegkitError(path, "no class names (the list is empty)")
        table = color_table_from_json(path, data)
        return _from_table(table, ignore_index, f"{path.name} colour table")
    if suffix == ".csv":
        rows = csv_rows(read_text(path, "class list"))
        if rows and all(len(row) == 1 for row in rows):
            names = [row[0] for row in rows]
            names = names[1:] if names[0].lower() in _CSV_HEADERS else names
            return ClassList(clean_class_names(names, path), path.name, path)
        return _from_table(color_table_from_rows(path, rows), ignore_index, f"{path.name} colour table")
    lines = read_text(path, "class list").splitlines()
    return ClassList(clean_class_names(lines, path, skip_blank=True), path.name, path)


def table_class_list(table: ColorTable, ignore_index: int = 255) -> ClassList:
    """The class names of a colour table (given with ``--colors``)."""
    name = table.source.name if table.source is not None else "--colors"
    return _from_table(table, ignore_index, f"{name} colour table")


def _from_table(table: ColorTable, ignore_index: int, origin: str) -> ClassList:
    return ClassList(clean_class_names(table.class_names(ignore_index), table.source), origin, table.source, table)


def find_class_file(folder: Path, *, search_parent: bool, names: Sequence[str] = CLASS_FILES) -> Path | None:
    """The first class file of ``names`` in ``folder`` (then in its parent, when ``search_parent``)."""
    for directory in (folder, folder.parent) if search_parent else (folder,):
        for name in names:
            if (directory / name).is_file():
                return directory / name
    return None


def with_background_first(classes: ClassList) -> ClassList:
    """A labelme class list: pixels no shape covers are class 0, so a background name comes first.

    ``_background_`` is put first when no name is a background name.

    Raises:
        SegkitError: a background name anywhere but first.
    """
    misplaced = [name for name in classes.names[1:] if is_background_name(name)]
    if misplaced:
        raise SegkitError(
            classes.path or classes.origin, f"'{misplaced[0]}' must be the first class (index 0, unlabelled pixels)"
        )
    if is_background_name(classes.names[0]):
        return classes
    return replace(classes, names=[BACKGROUND_LABEL, *classes.names], origin=f"{classes.origin} + {BACKGROUND_LABEL}")


def default_class_list(
    encoding: str, values: Sequence[int], ignore_index: int, voc_palette: np.ndarray | None = None
) -> ClassList:
    """Class names when none are given or found: VOC's, background/foreground, or numbered.

    Args:
        encoding: the masks' encoding (:data:`segkit.data.masks.ENCODINGS`).
        values: the mask values found.
        ignore_index: the ignore value (not a class).
        voc_palette: the palette of a VOC folder's masks; VOC's 21 names apply when it is VOC's.
    """
    labels = [value for value in values if value != ignore_index]
    highest = max(labels, default=0)
    if voc_palette is not None and len(voc_palette) >= 21 and np.array_equal(voc_palette[:21], PALETTE[:21]):
        if highest < len(VOC_CLASSES):
            return ClassList(list(VOC_CLASSES), "VOC names")
    if encoding == "binary-0-255":
        return ClassList(["background", "foreground"], "0/255 masks")
    return ClassList(["background"] + [f"class_{index}" for index in range(1, max(highest, 1) + 1)], "values found")


def default_palette(classes: Sequence[str]) -> np.ndarray:
    """``(len(classes), 3)`` uint8 colours for classes without colours of their own.

    The VOC palette by index, except that class 0 is black only when it is a background
    class (:func:`background_index`); otherwise it gets the first VOC
    colour no other class uses, so a real class is never drawn as "nothing".
    """
    colours = PALETTE[: max(len(classes), 1)].copy()
    if classes and not is_background_name(classes[0]):
        colours[0] = PALETTE[len(classes)]
    return colours
