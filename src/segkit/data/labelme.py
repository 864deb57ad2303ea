"""labelme annotations: read the JSON and its image, list labels, rasterise shapes.

Rasterisation follows ``labelme.utils.shape_to_mask`` / ``shapes_to_label``
(the code behind labelme's own VOC export) so that converted masks match
labelme's: every shape is drawn with PIL ImageDraw, in file order, later
shapes painting over earlier ones.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from segkit.data.classes import BACKGROUND_LABEL, IGNORE_LABEL, clean_class_name, is_background_name
from segkit.data.io import decode_image_bytes, read_image, read_json, upright_rgb
from segkit.errors import SegkitError

logger = logging.getLogger(__name__)

# labelme's shape_to_mask defaults: stroke width of lines, radius of points.
LABELS_FILE = "labels.txt"  # labelme's class list: __ignore__, then the classes in index order
LINE_WIDTH = 10
POINT_SIZE = 5

# Points labelme requires per shape type: an exact count, or a minimum.
_EXACT_POINTS = {"circle": 2, "rectangle": 2, "line": 2, "point": 1}
_MIN_POINTS = {"polygon": 3, "linestrip": 2, "points": 1, "mask": 1}
SHAPE_TYPES = tuple(_EXACT_POINTS) + tuple(_MIN_POINTS)
_SNIFF_CHUNK = 1 << 20  # bytes read at a time when looking for "shapes" in a file
# '"shapes"' as UTF-8 and as the UTF-16/32 encodings JSON may use: a labelme file holds one of them.
_SHAPES_KEY = tuple('"shapes"'.encode(codec) for codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"))


class NotLabelme(SegkitError):
    """A JSON file that parses but is not a labelme annotation (no ``shapes`` list): a COCO file, a config."""


@dataclass
class LabelmeAnnotation:
    """One labelme JSON file with its decoded image.

    Attributes:
        path: The JSON file.
        image: ``(H, W, 3)`` uint8 RGB, EXIF orientation applied.
        shapes: The JSON's ``shapes`` list, as stored.
        image_path: The image file read, or None when the image came from ``imageData``.
        image_format: PIL format name of the source image ("JPEG", "PNG", ...).
    """

    path: Path
    image: np.ndarray
    shapes: list[dict]
    image_path: Path | None
    image_format: str | None = None


def read_labelme(json_path: str | Path, label_map: Callable[[str], str] | None = None) -> LabelmeAnnotation:
    """Read a labelme JSON file and its image (labels through ``label_map``, when given).

    Like labelme, the embedded base64 ``imageData`` is used when present; otherwise
    ``imagePath`` is resolved relative to the JSON's folder, falling back to the bare
    file name there (for Windows or absolute paths written on another machine).

    Args:
        json_path: The labelme ``.json`` file.

    Returns:
        The annotation with its RGB image.

    Raises:
        NotLabelme: The file is JSON but not a labelme annotation.
        SegkitError: The JSON is unreadable, its shapes or labels are malformed, or
            the image is missing or undecodable.
    """
    path = Path(json_path)
    data = _load_json(path)
    shapes = mapped(_validated_shapes(path, data), label_map)
    image_data = data.get("imageData")
    if image_data:
        image, image_format = _decode_image_data(path, image_data)
        image_path = None
    else:
        image_path = _find_image(path, data.get("imagePath"))
        image = read_image(image_path)
        image_format = Image.registered_extensions().get(image_path.suffix.lower())
    _check_declared_size(path, data, image)
    return LabelmeAnnotation(path, image, shapes, image_path, image_format)


def find_labelme_files(folder: str | Path, problems: list[SegkitError] | None = None) -> list[Path]:
    """Sorted ``*.json`` files of one folder (not recursive) that may be labelme annotations.

    Found without parsing the annotations: a labelme file mentions ``"shapes"``. A
    JSON file that does not is parsed and skipped when it is not labelme (a COCO file,
    a config); one that does not parse is kept, so that reading it reports the problem.
    Two files whose names differ only in case (``a.json``, ``a.JSON``) would write the
    same outputs: the second is a problem and left out.

    Args:
        folder: the folder to list.
        problems: collects name clashes; without it the first clash is raised.
    """
    files: dict[str, Path] = {}
    for path in filter(_may_be_labelme, _json_files(folder)):
        other = files.setdefault(path.stem.casefold(), path)
        if other is not path:
            clash = SegkitError(
                path, f"same name as {other.name} but for letter case (outputs would collide); left out"
            )
            if problems is None:
                raise clash
            problems.append(clash)
    return list(files.values())


def has_labelme_files(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``*.json`` file that may be a labelme annotation (stops at the first)."""
    return any(map(_may_be_labelme, _json_files(folder)))


def _json_files(folder: str | Path) -> list[Path]:
    """The ``*.json`` files of ``folder`` (any letter case, hidden ones left out), sorted."""
    return sorted(
        path for path in Path(folder).iterdir()
        if path.suffix.lower() == ".json" and not path.name.startswith(".") and path.is_file()
    )  # fmt: skip


def labels_in_class_order(labels: Iterable[str]) -> list[str]:
    """The background first (class 0), then the other labels sorted; ``__ignore__`` left out.

    The background is ``_background_`` when used, else the first background name the
    labels use (``background``, ``bg`` ...), else ``_background_``.
    """
    found = set(labels) - {IGNORE_LABEL}
    named = sorted(label for label in found if is_background_name(label))
    background = BACKGROUND_LABEL if BACKGROUND_LABEL in found or not named else named[0]
    return [background, *sorted(found - {background})]


def count_labels(
    paths: Iterable[Path],
    problems: list[SegkitError],
    label_map: Callable[[str], str] | None = None,
    first_files: dict[str, Path] | None = None,
) -> tuple[list[Path], Counter[str]]:
    """Parse each annotation once: the files that are labelme, and how many shapes carry each label.

    A file that is not labelme is left out; a file that cannot be read is kept (reading
    it reports the problem again) and its error added to ``problems``. ``first_files``
    collects the first file holding each label.
    """
    kept: list[Path] = []
    counts: Counter[str] = Counter()
    for path in paths:
        try:
            labels = [shape["label"] for shape in read_shapes(path, label_map)]
            counts.update(labels)
            if first_files is not None:
                for label in labels:
                    first_files.setdefault(label, path)
        except NotLabelme:
            continue
        except SegkitError as error:
            problems.append(error)
        kept.append(path)
    return kept, counts


def scan_labels(
    paths: Iterable[Path], problems: list[SegkitError], label_map: Callable[[str], str] | None = None
) -> tuple[list[Path], list[str]]:
    """:func:`count_labels`, with the labels in class order (:func:`labels_in_class_order`)."""
    kept, counts = count_labels(paths, problems, label_map)
    return kept, labels_in_class_order(counts)


def read_shapes(json_path: str | Path, label_map: Callable[[str], str] | None = None) -> list[dict]:
    """The checked shapes of a labelme file (labels through ``label_map``), without reading its image.

    Raises:
        NotLabelme: JSON, but not labelme.
        SegkitError: unreadable file, malformed shapes or labels.
    """
    path = Path(json_path)
    return mapped(_validated_shapes(path, _load_json(path)), label_map)


def mapped(shapes: list[dict], label_map: Callable[[str], str] | None) -> list[dict]:
    """``shapes`` with each label replaced by its class under ``label_map`` (as they are without one)."""
    if label_map is None:
        return shapes
    return [{**shape, "label": label_map(shape["label"])} for shape in shapes]


def rasterize(
    annotation: LabelmeAnnotation,
    label_to_index: dict[str, int],
    ignore_index: int = 255,
) -> np.ndarray:
    """Paint the annotation's shapes into an ``(H, W)`` uint8 class-index mask.

    Pixels no shape covers are 0 (background). Shapes are painted in file order,
    later ones over earlier ones; ``__ignore__`` shapes paint ``ignore_index``.
    Points outside the image are allowed (the drawing is clipped to it) and
    reported in one warning per file.

    Args:
        annotation: From :func:`read_labelme`.
        label_to_index: Label name -> class index (0..255).
        ignore_index: Value painted by ``__ignore__`` shapes.

    Raises:
        SegkitError: A label is not in ``label_to_index``, or a shape is malformed
            (wrong number of points, unknown type, undecodable mask).
    """
    height, width = annotation.image.shape[:2]
    return rasterize_shapes(annotation.path, annotation.shapes, (height, width), label_to_index, ignore_index)


def rasterize_shapes(
    path: Path,
    shapes: list[dict],
    size: tuple[int, int],
    label_to_index: dict[str, int],
    ignore_index: int = 255,
) -> np.ndarray:
    """:func:`rasterize` for shapes already read (from :func:`read_shapes`) on an image of ``(height, width)``."""
    for label, index in [*label_to_index.items(), (IGNORE_LABEL, ignore_index)]:
        if not 0 <= int(index) <= 255:
            raise SegkitError(path, f"class index {index} of '{label}' does not fit in a uint8 mask")
    height, width = size
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    outside = 0
    for number, shape in enumerate(shapes):
        label = shape["label"]
        if label == IGNORE_LABEL:
            value = ignore_index
        elif label in label_to_index:
            value = int(label_to_index[label])
        else:
            raise SegkitError(path, f"unknown label '{label}' (known: {', '.join(label_to_index)})")
        shape_type = _shape_type(path, number, shape)
        points = [(float(x), float(y)) for x, y in shape["points"]]
        # The image spans [0, W] x [0, H]; a point on its border is inside.
        outside += sum(not (0 <= x <= width and 0 <= y <= height) for x, y in points)
        if shape_type == "mask":
            crop = _decode_shape_mask(path, number, shape)
            left, top = int(points[0][0]), int(points[0][1])
            if -crop.width < left < width and -crop.height < top < height:  # else nothing of it is on the image
                canvas.paste(value, (left, top), crop)
        else:
            _draw_shape(draw, shape_type, points, value)
    if outside:
        logger.warning(
            "%s: %d point(s) outside the %dx%d image; shapes were clipped to it",
            path,
            outside,
            width,
            height,
        )
    return np.asarray(canvas, dtype=np.uint8).copy()


def _draw_shape(draw: ImageDraw.ImageDraw, shape_type: str, points: list[tuple[float, float]], value: int) -> None:
    """Draw one shape as labelme's shape_to_mask does (outline and fill)."""
    if shape_type == "circle":  # centre and a point on the circle
        (cx, cy), (px, py) = points
        radius = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=value, fill=value)
    elif shape_type == "rectangle":  # two opposite corners, in any order
        (x0, y0), (x1, y1) = points
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=value, fill=value)
    elif shape_type in ("line", "linestrip"):
        draw.line(points, fill=value, width=LINE_WIDTH)
    elif shape_type in ("point", "points"):
        for cx, cy in points:
            draw.ellipse(
                [cx - POINT_SIZE, cy - POINT_SIZE, cx + POINT_SIZE, cy + POINT_SIZE], outline=value, fill=value
            )
    else:
        draw.polygon(points, outline=value, fill=value)


def _shape_type(path: Path, number: int, shape: dict) -> str:
    """The shape's type (labelme's default is polygon), checked against its point count."""
    shape_type = shape.get("shape_type") or "polygon"
    where = f"shape {number} ('{shape['label']}', {shape_type})"
    if shape_type not in SHAPE_TYPES:
        raise SegkitError(path, f"{where}: unsupported shape_type (supported: {', '.join(SHAPE_TYPES)})")
    count = len(shape["points"])
    if shape_type in _EXACT_POINTS and count != _EXACT_POINTS[shape_type]:
        raise SegkitError(path, f"{where}: needs exactly {_EXACT_POINTS[shape_type]} point(s), has {count}")
    if shape_type in _MIN_POINTS and count < _MIN_POINTS[shape_type]:
        raise SegkitError(path, f"{where}: needs at least {_MIN_POINTS[shape_type]} point(s), has {count}")
    return shape_type


def _decode_shape_mask(path: Path, number: int, shape: dict) -> Image.Image:
    """A ``mask`` shape's base64 PNG crop as an L image, 255 inside, 0 outside."""
    encoded = shape.get("mask")
    if not isinstance(encoded, str) or not encoded:
        raise SegkitError(path, f"shape {number} ('{shape['label']}', mask): no base64 'mask' data")
    image = _open_base64_image(path, encoded, f"shape {number} mask")
    if image.mode in ("RGB", "RGBA", "LA", "CMYK"):
        image = image.convert("L")
    inside = np.asarray(image) != 0  # labelme: any non-zero value is inside
    return Image.fromarray(inside.astype(np.uint8) * 255, mode="L")


def _is_labelme(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


def _load_json(path: Path) -> dict[str, Any]:
    """Parse a JSON file that must be a labelme object (a dict with a ``shapes`` list)."""
    data = read_json(path, "labelme JSON")
    if not _is_labelme(data):
        raise NotLabelme(path, "not a labelme annotation (no 'shapes' list)")
    return data


def _may_be_labelme(path: Path) -> bool:
    """Whether ``path`` may be a labelme file, parsing only JSON files that do not mention "shapes"."""
    if _mentions_shapes(path):
        return True
    try:
        return _is_labelme(read_json(path, "labelme JSON"))
    except SegkitError:  # kept, so that reading it reports the problem
        return True


def _mentions_shapes(path: Path) -> bool:
    """Whether the file's bytes hold the key ``"shapes"`` in any encoding JSON allows (read in chunks)."""
    overlap = max(map(len, _SHAPES_KEY)) - 1
    tail = b""
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_SNIFF_CHUNK):
                window = tail + chunk
                if any(key in window for key in _SHAPES_KEY):
                    return True
                tail = window[-overlap:]
    except OSError:
        return True  # kept, so that reading it reports the problem
    return False


def _validated_shapes(path: Path, data: dict[str, Any]) -> list[dict]:
    """Check every shape has a usable label and a list of finite [x, y] points.

    Labels lose surrounding spaces (``" cat"`` is ``cat``); an empty label or one with a
    line break cannot be a class name and is refused here, before anything is written.
    """
    for number, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise SegkitError(path, f"shape {number}: not an object with a string 'label'")
        shape["label"] = clean_class_name(shape["label"], path, f"shape {number}: label")
        points = shape.get("points")
        if not isinstance(points, list) or not all(_is_point(point) for point in points):
            raise SegkitError(path, f"shape {number} ('{shape['label']}'): 'points' must be a list of [x, y] numbers")
    return data["shapes"]


def _is_point(point: Any) -> bool:
    return (
        isinstance(point, list | tuple)
        and len(point) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in point)
    )


def _find_image(json_path: Path, image_path: Any) -> Path:
    """The image file named by ``imagePath``: as given relative to the JSON, else by file name."""
    if not isinstance(image_path, str) or not image_path.strip():
        raise SegkitError(json_path, "no imageData and no imagePath; cannot find the image")
    portable = image_path.replace("\\", "/")
    folder = json_path.parent
    name = PurePosixPath(portable).name
    # beside the JSON (as written, or by file name), then in an images/ folder below or beside it
    candidates = (folder / image_path, folder / portable, folder / name, folder / "images" / name)
    for candidate in (*candidates, folder.parent / "images" / name):
        if candidate.is_file():
            return candidate
    raise SegkitError(
        json_path,
        f"image '{image_path}' not found (looked in {folder}, {folder / 'images'} and {folder.parent / 'images'}) "
        "and no imageData embedded",
    )


def _open_base64_image(json_path: Path, encoded: str, what: str) -> Image.Image:
    """Decode a base64 image field, every failure as a SegkitError naming the JSON."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SegkitError(json_path, f"{what} is not valid base64") from None
    return decode_image_bytes(raw, json_path, what)


def _decode_image_data(json_path: Path, encoded: Any) -> tuple[np.ndarray, str | None]:
    """The embedded image as RGB (EXIF applied) and its format name."""
    if not isinstance(encoded, str):
        raise SegkitError(json_path, "imageData must be a base64 string")
    image = _open_base64_image(json_path, encoded, "imageData")
    return upright_rgb(image), image.format


def _check_declared_size(path: Path, data: dict[str, Any], image: np.ndarray) -> None:
    """Warn (as labelme does) when imageHeight/imageWidth disagree with the image."""
    height, width = image.shape[:2]
    declared = (data.get("imageHeight"), data.get("imageWidth"))
    if any(value is not None and value != actual for value, actual in zip(declared, (height, width))):
        logger.warning(
            "%s: imageHeight x imageWidth is %s x %s but the image is %d x %d; using the image's size",
            path,
            declared[0],
            declared[1],
            height,
            width,
        )
