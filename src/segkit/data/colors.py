"""Colour tables: class names and the RGB colour of each class, from JSON or CSV.

A colour table maps the colours of an RGB colour-coded mask to class indices
(``--colors FILE``). Accepted files:

- JSON list: ``[{"name": "road", "rgb": [128, 64, 128], "index": 1}, ...]`` where the
  colour is ``rgb``, ``color``, ``colour`` or ``hex`` (a ``[r, g, b]`` list or a
  ``"#rrggbb"`` string) and ``index`` is optional (default: position in the list);
- JSON object ``{"classes": [...]}`` holding such a list (as in ``classes.json``);
- JSON object ``{"road": [128, 64, 128], ...}`` (index = position);
- CSV ``name,r,g,b[,index]`` with an optional header row.

An entry whose index equals the ignore value (255 by default) marks a colour
whose pixels are ignored, not a class.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageColor

from segkit.data.io import read_json, read_text
from segkit.errors import SegkitError

_COLOR_KEYS = ("rgb", "color", "colour", "hex")
UNKNOWN_COLOR = 256  # value of colours missing from the table in ColorTable.lookup_table()


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 RGB -> ``(...)`` uint32 ``r << 16 | g << 8 | b`` (in place, one temporary)."""
    keys = colors[..., 0].astype(np.uint32)
    keys <<= 8
    keys |= colors[..., 1]
    keys <<= 8
    keys |= colors[..., 2]
    return keys


@dataclass
class ColorTable:
    """Class names, their RGB colours and the class index of each colour.

    Attributes:
        names: one name per colour.
        colors: ``(K, 3)`` uint8 RGB colours, unique.
        indices: class index of each colour; the ignore value marks ignored pixels.
        source: the file the table came from (for error messages), if any.
    """

    names: list[str]
    colors: np.ndarray
    indices: list[int]
    source: Path | None = None
    _lookup: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def lookup_table(self) -> np.ndarray:
        """``(2**24,)`` uint16 class index of every packed colour (:func:`pack_rgb`).

        Colours not in the table map to :data:`UNKNOWN_COLOR`. Built once (32 MiB): a
        direct look-up is several times faster than a search over the colours on
        multi-megapixel masks.
        """
        if self._lookup is None:
            lookup = np.full(1 << 24, UNKNOWN_COLOR, dtype=np.uint16)
            lookup[pack_rgb(self.colors)] = self.indices
            self._lookup = lookup
        return self._lookup

    def class_names(self, ignore_index: int = 255) -> list[str]:
        """Class names ordered by index, without the ignore entry.

        Raises:
            SegkitError: when the class indices are not exactly ``0..K-1``.
        """
        by_index: dict[int, str] = {}
        for name, index in zip(self.names, self.indices, strict=True):
            if index != ignore_index:
                by_index.setdefault(index, name)
        missing = sorted(set(range(len(by_index))) - set(by_index))
        if missing:
            raise SegkitError(
                self.source,
                f"class indices must be 0..{len(by_index) - 1} without gaps; missing {missing}",
            )
        return [by_index[index] for index in range(len(by_index))]

    def class_colors(self, num_classes: int) -> list[list[int]] | None:
        """The table's colour of each class ``0..num_classes-1`` (the first listed), or ``None`` if one has none."""
        by_index: dict[int, list[int]] = {}
        for color, index in zip(self.colors.tolist(), self.indices, strict=True):
            by_index.setdefault(index, [int(v) for v in color])
        if any(index not in by_index for index in range(num_classes)):
            return None
        return [by_index[index] for index in range(num_classes)]

    def describe(self, limit: int = 8) -> str:
        """Short ``name (r, g, b)`` list for error messages."""
        items = [f"{name} {tuple(int(c) for c in rgb)}" for name, rgb in zip(self.names, self.colors, strict=True)]
        more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more


def load_color_table(path: str | Path) -> ColorTable:
    """Read a colour table from a JSON or CSV file (see the module docstring).

    Raises:
        SegkitError: naming the file when it is missing, malformed or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise SegkitError(path, "colour table not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return color_table_from_json(path, read_json(path, "colour table"))
    if suffix in (".csv", ".txt"):
        return color_table_from_rows(path, csv_rows(read_text(path, "colour table")))
    raise SegkitError(path, "colour table must be a .json or .csv file")


def color_table_from_json(path: Path, data: Any) -> ColorTable:
    """A colour table from parsed JSON: a list of entries, ``{"classes": [...]}`` or ``{name: colour}``."""
    if isinstance(data, dict) and isinstance(data.get("classes"), list):
        data = data["classes"]
    if isinstance(data, dict):
        return _build_table(path, [(str(name), color, None) for name, color in data.items()])
    if not isinstance(data, list):
        raise SegkitError(path, "expected a list of classes, {'classes': [...]} or {name: [r, g, b]}")
    entries = []
    for position, item in enumerate(data):
        if not isinstance(item, dict) or "name" not in item:
            raise SegkitError(path, f"entry {position} needs a 'name' and a colour ('rgb' or 'color')")
        color = next((item[key] for key in _COLOR_KEYS if key in item), None)
        if color is None:
            raise SegkitError(path, f"entry {position} ({item['name']}) has no 'rgb' or 'color'")
        entries.append((str(item["name"]), color, item.get("index")))
    return _build_table(path, entries)


def csv_rows(text: str) -> list[list[str]]:
    """The non-blank rows of CSV text, cells stripped."""
    rows = csv.reader(text.splitlines())
    return [[cell.strip() for cell in row] for row in rows if row and any(cell.strip() for cell in row)]


def color_table_from_rows(path: Path, rows: list[list[str]]) -> ColorTable:
    """A colour table from CSV rows ``name,r,g,b[,index]`` (a header row is skipped)."""
    if rows and not _is_int(rows[0][1] if len(rows[0]) > 1 else ""):
        rows = rows[1:]  # header row
    entries = []
    for number, cells in enumerate(rows, start=1):
        if len(cells) not in (4, 5):
            raise SegkitError(path, f"row {number}: expected name,r,g,b[,index], got {cells}")
        entries.append((cells[0], cells[1:4], cells[4] if len(cells) == 5 else None))
    return _build_table(path, entries)


def _is_int(text: str) -> bool:
    try:
        int(text.strip())
    except ValueError:
        return False
    return True


def _parse_color(path: Path, name: str, color: Any) -> tuple[int, int, int]:
    try:
        rgb = ImageColor.getrgb(color)[:3] if isinstance(color, str) else tuple(int(c) for c in color)
    except (TypeError, ValueError, OverflowError):
        raise SegkitError(path, f"class {name!r}: cannot read colour {color!r}") from None
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise SegkitError(path, f"class {name!r}: colour {color!r} is not three values in 0..255")
    return rgb


def _build_table(path: Path, entries: list[tuple[str, Any, Any]]) -> ColorTable:
    if not entries:
        raise SegkitError(path, "colour table is empty")
    names, colors, indices = [], [], []
    seen: dict[tuple[int, int, int], str] = {}
    for position, (name, color, index) in enumerate(entries):
        rgb = _parse_color(path, name, color)
        if rgb in seen:
            raise SegkitError(path, f"colour {rgb} is used by both {seen[rgb]!r} and {name!r}")
        seen[rgb] = name
        try:
            index = position if index is None else int(index)
        except (TypeError, ValueError, OverflowError):
            raise SegkitError(path, f"class {name!r}: index {index!r} is not an integer") from None
        if not 0 <= index <= 255:
            raise SegkitError(path, f"class {name!r}: index {index} is outside 0..255")
        names.append(name)
        colors.append(rgb)
        indices.append(index)
    return ColorTable(names, np.array(colors, dtype=np.uint8), indices, path)
