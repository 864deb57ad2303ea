"""Mask encodings: detect how a folder's masks store classes and decode them to indices.

Encodings (one per dataset):

- ``index``: grayscale (L, 1, I;16, I) pixel values are class ids; RGB files whose
  three channels are equal count as grayscale.
- ``palette``: P-mode PNGs; the palette indices are the class ids (VOC, labelme exports).
- ``binary-0-255``: grayscale masks whose values are 0 and 255 only; 255 becomes class 1
  (unless the class list names other than 2 classes: see :func:`is_binary_0_255`).
- ``rgb``: colour-coded masks mapped to classes through a :class:`ColorTable`.

Every decoded mask is an ``(H, W)`` uint8 array of class ids, the ignore value kept.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segkit.data.colors import UNKNOWN_COLOR, ColorTable, pack_rgb
from segkit.data.io import index_image_files, peek_image, read_image, read_mask_file, write_image
from segkit.data.options import ShowOptions
from segkit.errors import SegkitError
from segkit.visualize import colorize, overlay

ENCODINGS = ("index", "palette", "binary-0-255", "rgb")
BINARY_MESSAGE = "masks are 0/255 binary: mapping 255 → 1"
NO_TABLE_MESSAGE = (
    "RGB colour-coded mask but no colour table: pass --colors FILE "
    "(JSON or CSV of name, r, g, b) to map colours to classes"
)
_COLOR_MODES = ("RGB", "RGBA", "CMYK", "PA")  # read_mask_file returns these as RGB
_MAX_LISTED = 10  # values or colours named in one error message


@dataclass
class MaskScan:
    """What one pass over a dataset's mask files found.

    Attributes:
        encoding: one of :data:`ENCODINGS`.
        values: sorted raw values present in the grayscale/palette masks (empty for rgb).
        palette: ``(N, 3)`` uint8 palette of the first P-mode mask, if any.
        errors: one :class:`SegkitError` per unreadable mask (the scan goes on).
    """

    encoding: str
    values: list[int] = field(default_factory=list)
    palette: np.ndarray | None = None
    errors: list[SegkitError] = field(default_factory=list)


def value_counts(mask: np.ndarray) -> np.ndarray:
    """``(256,)`` int64 pixel count of each value of a uint8 mask.

    PIL's C histogram: about 3x faster than ``np.bincount``, which first widens
    uint8 to int64.
    """
    mask = np.asarray(mask, dtype=np.uint8)
    if mask.ndim != 2:
        mask = mask.reshape(1, -1)
    return np.asarray(Image.fromarray(np.ascontiguousarray(mask)).histogram(), dtype=np.int64)


def present_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array."""
    array = np.asarray(array)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype == np.uint8:
        return np.flatnonzero(value_counts(array))
    flat = array.ravel()
    if flat.min() >= 0 and flat.max() < 1 << 16:  # 16-bit masks
        return np.flatnonzero(np.bincount(flat))
    return np.unique(flat)


def _stored_mode(path: Path) -> str | None:
    """The PIL mode from the file header, None when it cannot be opened (reading it then says why)."""
    try:
        return peek_image(path)[0]
    except SegkitError:
        return None


def is_binary_0_255(values: Collection[int], num_classes: int | None = None) -> bool:
    """The one 0/255 rule: masks whose values are 0 and 255 only (255 present) store a binary mask.

    255 is then class 1, not the ignore value. The guess yields to what the user said:
    when a class list names other than 2 classes (``num_classes``), 0/255 masks are
    plain values (255 usually being the ignore value).
    """
    return num_classes in (None, 2) and 255 in values and set(values) <= {0, 255}


def _is_gray(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))


def scan_masks(
    paths: Sequence[str | Path], color_table: ColorTable | None = None, num_classes: int | None = None
) -> MaskScan:
    """Read every mask once and work out the dataset's encoding and the values used.

    ``num_classes`` is the length of the class list the user gave (or the dataset's
    class file), if any: it decides whether 0/255 masks are binary (:func:`is_binary_0_255`).
    With a colour table, RGB masks are only opened (their mode is in the header;
    their colours are checked when they are decoded). Unreadable files are collected
    in ``errors``; an RGB colour mask with no colour table, or RGB masks mixed with
    grayscale ones, raise at once (the user must change the command, not the data).
    """
    first_of_kind: dict[str, Path] = {}
    values: set[int] = set()
    errors: list[SegkitError] = []
    for path in map(Path, paths):
        if color_table is not None and _stored_mode(path) in _COLOR_MODES:
            first_of_kind.setdefault("rgb", path)
            continue
        try:
            array, mode = read_mask_file(path)
        except SegkitError as error:
            errors.append(error)
            continue
        if array.ndim == 3:
            if not _is_gray(array):
                raise SegkitError(path, NO_TABLE_MESSAGE)
            array = array[..., 0]
        present = present_values(array).tolist()
        palette_kind = mode == "P" and not _gray_palette(path, present)  # a gray palette is a gray mask
        first_of_kind.setdefault("palette" if palette_kind else "gray", path)
        values.update(present)
    encoding = _choose_encoding(first_of_kind, values, num_classes)
    return MaskScan(encoding, sorted(values), _first_palette(first_of_kind), errors)


def _gray_palette(path: Path, values: list[int]) -> bool:
    """Whether a palette image draws each of ``values`` as the gray of that value (as GIF writers store gray masks)."""
    with Image.open(path) as image:
        palette = image.getpalette() or []
    return all(palette[3 * value : 3 * value + 3] == [value] * 3 for value in values)


def _choose_encoding(first_of_kind: dict[str, Path], values: set[int], num_classes: int | None) -> str:
    if "rgb" in first_of_kind:
        other = next((kind for kind in first_of_kind if kind != "rgb"), None)
        if other is not None:
            raise SegkitError(
                first_of_kind[other],
                f"not an RGB colour mask like {first_of_kind['rgb'].name}; all masks must use one encoding",
            )
        return "rgb"
    if set(first_of_kind) == {"palette"}:
        return "palette"
    if set(first_of_kind) == {"gray"} and is_binary_0_255(values, num_classes):
        return "binary-0-255"
    return "index"


def _first_palette(first_of_kind: dict[str, Path]) -> np.ndarray | None:
    path = first_of_kind.get("palette")
    if path is None:
        return None
    with Image.open(path) as image:  # header only: the palette is stored before the pixels
        palette = image.getpalette()
    return None if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)


def _rgb_to_index(rgb: np.ndarray, table: ColorTable, path: str | Path) -> np.ndarray:
    keys = pack_rgb(rgb)
    ids = table.lookup_table()[keys]
    unknown = ids == UNKNOWN_COLOR
    if unknown.any():
        colours, counts = np.unique(keys[unknown], return_counts=True)
        worst = int(colours[np.argmax(counts)])
        rgb_text = f"({worst >> 16}, {(worst >> 8) & 255}, {worst & 255})"
        more = f" (and {len(colours) - 1} other unknown colours)" if len(colours) > 1 else ""
        raise SegkitError(
            path,
            f"unknown colour {rgb_text} at {int(counts.max())} pixels{more}; known: {table.describe()}",
        )
    return ids.astype(np.uint8)


def _check_range(values: np.ndarray, path: str | Path, num_classes: int | None, ignore_index: int) -> None:
    limit = 256 if num_classes is None else num_classes
    bad = [int(v) for v in values if int(v) != ignore_index and not 0 <= int(v) < limit]
    if not bad:
        return
    listed = f"{bad[:_MAX_LISTED]}" + (f" (+{len(bad) - _MAX_LISTED} more)" if len(bad) > _MAX_LISTED else "")
    if num_classes is None:
        raise SegkitError(path, f"values {listed} do not fit a uint8 class mask (0..255)")
    # a single value outside the classes is usually a void label (SegNet's CamVid marks unlabelled pixels 11)
    hint = f"; if {bad[0]} marks unlabelled pixels, give --ignore-index {bad[0]}" if len(bad) == 1 else ""
    raise SegkitError(
        path, f"values {listed} out of range for {num_classes} classes (ignore value {ignore_index}){hint}"
    )


def decode_mask(
    array: np.ndarray,
    mode: str,
    encoding: str,
    *,
    path: str | Path,
    color_table: ColorTable | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """Turn a mask as stored (from :func:`read_mask_file`) into ``(H, W)`` uint8 class ids.

    Args:
        array: ``(H, W)`` integer or ``(H, W, 3)`` RGB array.
        mode: the PIL mode the file had.
        encoding: the dataset's encoding (one of :data:`ENCODINGS`).
        path: the file, named in errors.
        color_table: maps RGB colours to ids (needed for colour-coded masks).
        num_classes: when given, ids must be below it (or equal ``ignore_index``).
        ignore_index: the value that marks pixels without a label.

    Raises:
        SegkitError: unknown colour, values out of range, or RGB mask without a table.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown mask encoding {encoding!r}; expected one of {ENCODINGS}")
    array = np.asarray(array)
    if array.ndim == 3:
        if color_table is not None:
            ids = _rgb_to_index(array, color_table, path)
            _check_range(present_values(ids), path, num_classes, ignore_index)
            return ids
        if not _is_gray(array):
            raise SegkitError(path, NO_TABLE_MESSAGE)
        array = array[..., 0]
    elif encoding == "rgb":
        raise SegkitError(path, f"expected an RGB colour mask like the others, found mode {mode}")
    values = present_values(array)
    if encoding == "binary-0-255":
        bad = [int(v) for v in values if v not in (0, 255)]
        if bad:
            raise SegkitError(path, f"values {bad[:_MAX_LISTED]} in a 0/255 binary mask (only 0 and 255 allowed)")
        return (array == 255).astype(np.uint8)
    _check_range(values, path, num_classes, ignore_index)
    return array.astype(np.uint8)


def read_mask(
    path: str | Path,
    encoding: str,
    *,
    color_table: ColorTable | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """Read and decode one mask file (see :func:`decode_mask`)."""
    array, mode = read_mask_file(path)
    return decode_mask(
        array,
        mode,
        encoding,
        path=path,
        color_table=color_table,
        num_classes=num_classes,
        ignore_index=ignore_index,
    )


FIT_MASKS_HINT = "a scaled copy of it: --fit-masks resizes such masks"


def is_scaled_copy(mask_shape: tuple[int, ...], image_shape: tuple[int, ...], tolerance: float = 0.01) -> bool:
    """Whether a mask of ``mask_shape`` has its image's aspect ratio (within ``tolerance``): a scaled copy."""
    (mask_height, mask_width), (height, width) = mask_shape[:2], image_shape[:2]
    if min(mask_height, mask_width, height, width) < 1:
        return False
    return abs((mask_width / mask_height) / (width / height) - 1) <= tolerance


def fit_mask(mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` resized to the image's height and width, nearest neighbour (class indices stay class indices)."""
    height, width = image_shape[:2]
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))


def check_same_size(mask_path: str | Path, mask_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> None:
    """Raise a SegkitError naming the mask when it and its image differ in size (and how to fix a scaled copy)."""
    if tuple(mask_shape[:2]) != tuple(image_shape[:2]):
        scaled = f" ({FIT_MASKS_HINT})" if is_scaled_copy(mask_shape, image_shape) else ""
        raise SegkitError(
            mask_path,
            f"mask is {mask_shape[1]}x{mask_shape[0]} but its image is {image_shape[1]}x{image_shape[0]}{scaled}",
        )


def read_region(path: str | Path) -> np.ndarray:
    """A region-of-interest mask as booleans: True where the file is not 0 (any channel)."""
    array, _ = read_mask_file(path)
    return np.asarray(array.any(axis=2) if array.ndim == 3 else array > 0)


def _find_image(mask_path: Path, image: Path) -> Path:
    if not image.is_dir():
        return image
    found = index_image_files(image, recursive=False, problems=[]).get(mask_path.stem)
    if found is None:
        raise SegkitError(image, f"no image named {mask_path.stem}.* for the overlay of {mask_path.name}")
    return found


def show_masks(masks: str | Path | Sequence[str | Path], **options: Any) -> list[Path]:
    """Colour previews (and overlays) of mask files: ``segkit show``.

    The colours are the dataset's: a colour table (``colors``, or a ``classes.json`` beside
    the masks' folder), else :func:`segkit.data.classes.default_palette` of the class names found
    there (class 0 black only when it is a background), else the VOC palette. Pixels of the
    background class stay as they are in overlays; a class 0 that is not a background is drawn.

    Args:
        masks: mask files (their stored values are the class ids; RGB masks through the table).
        **options: the command's options, as :class:`~segkit.data.options.ShowOptions` declares
            them: ``out`` (output folder; default: beside each mask), ``overlay`` (image to blend
            onto: a file, or a folder holding an image with each mask's name), ``alpha=0.5``
            (overlay opacity of the colours, in ``[0, 1]``), ``colors`` (a colour table, JSON or
            CSV, to read RGB colour-coded masks and colour the classes).

    Returns:
        The files written.

    Raises:
        OptionError: ``alpha`` outside ``[0, 1]``.
        SegkitError: an unreadable mask or image, or a mask and image of different sizes.

    Example:
        >>> import segkit
        >>> segkit.show(["data/masks/a.png"], overlay="data/images", out="previews/")
    """
    from segkit.data.colors import load_color_table

    settings = ShowOptions(**options)
    out, overlay, alpha, colors = settings.out, settings.overlay, settings.alpha, settings.colors
    given = load_color_table(colors) if colors is not None else None
    colouring: dict[Path, tuple[ColorTable | None, np.ndarray | None, int | None]] = {}
    written: list[Path] = []
    for mask in [masks] if isinstance(masks, (str, Path)) else masks:
        mask_path = Path(mask)
        if mask_path.parent not in colouring:  # the dataset's class list is read once per folder
            colouring[mask_path.parent] = _colouring(mask_path.parent, given)
        table, palette, background = colouring[mask_path.parent]
        written += write_previews(mask_path, out_dir=out, image=overlay, alpha=alpha, color_table=table,
                                  palette=palette, background=background)  # fmt: skip
    return written


def _colouring(folder: Path, table: ColorTable | None) -> tuple[ColorTable | None, np.ndarray | None, int | None]:
    """``(colour table, palette, background class)`` of the masks in ``folder``: ``table``, else the class file
    beside the folder (its colour table or :func:`~segkit.data.classes.default_palette` of its names), else VOC's."""
    from segkit.data.classes import background_index, default_palette, find_class_file, read_class_file

    listed = None
    if table is None:
        class_file = find_class_file(folder, search_parent=True)
        listed = read_class_file(class_file) if class_file is not None else None
        table = listed.color_table if listed is not None else None
    names = table.class_names() if table is not None else listed.names if listed is not None else None
    if not names:
        return table, None, 0
    colours = table.class_colors(len(names)) if table is not None else None
    palette = np.asarray(colours, dtype=np.uint8) if colours is not None else default_palette(names)
    return table, palette, background_index(names)


def write_previews(
    mask_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    image: str | Path | None = None,
    alpha: float = 0.5,
    color_table: ColorTable | None = None,
    palette: np.ndarray | None = None,
    background: int | None = 0,
) -> list[Path]:
    """Write ``<stem>_color.png`` (and ``<stem>_overlay.png`` with ``image``) for one mask.

    The mask's stored values are the class ids, coloured by ``palette`` (default: VOC's,
    0 black, 255 white); ``image`` is an image file or a folder holding an image with the
    mask's stem, onto which every class but ``background`` is blended. Files go to ``out_dir``
    (default: beside the mask). Returns the files written.
    """
    mask_path = Path(mask_path)
    out = mask_path.parent if out_dir is None else Path(out_dir)
    ids = read_mask(mask_path, "index", color_table=color_table)
    written = [out / f"{mask_path.stem}_color.png"]
    write_image(written[0], colorize(ids, palette))
    if image is not None:
        image_path = _find_image(mask_path, Path(image))
        rgb = read_image(image_path)
        check_same_size(mask_path, ids.shape, rgb.shape)
        written.append(out / f"{mask_path.stem}_overlay.png")
        write_image(written[1], overlay(rgb, ids, alpha, palette, background))
    return written
