"""labelme annotations: read the JSON and its image, list labels, rasterise shapes.

Rasterisation follows ``labelme.utils.shape_to_mask`` / ``shapes_to_label``
(the code behind labelme's own VOC export) so that converted masks match
labelme's: every shape is drawn with PIL ImageDraw, in file order, later
shapes painting over earlier ones.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from segkit.data.io import MAX_IMAGE_PIXELS, read_image, to_rgb
from segkit.errors import SegkitError

logger = logging.getLogger(__name__)

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
BACKGROUND_NAMES = (BACKGROUND_LABEL, "background")

# labelme's shape_to_mask defaults: stroke width of lines, radius of points.
LINE_WIDTH = 10
POINT_SIZE = 5

# Points labelme requires per shape type: an exact count, or a minimum.
_EXACT_POINTS = {"circle": 2, "rectangle": 2, "line": 2, "point": 1}
_MIN_POINTS = {"polygon": 3, "linestrip": 2, "points": 1, "mask": 1}
SHAPE_TYPES = tuple(_EXACT_POINTS) + tuple(_MIN_POINTS)


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


def read_labelme(json_path: str | Path) -> LabelmeAnnotation:
    """Read a labelme JSON file and its image.

    Like labelme, the embedded base64 ``imageData`` is used when present; otherwise
    ``imagePath`` is resolved relative to the JSON's folder, falling back to the bare
    file name there (for Windows or absolute paths written on another machine).

    Args:
        json_path: The labelme ``.json`` file.

    Returns:
        The annotation with its RGB image.

    Raises:
        SegkitError: The JSON is unreadable or not labelme, its shapes are malformed,
            or the image is missing or undecodable.
    """
    path = Path(json_path)
    data = _load_json(path)
    shapes = _validated_shapes(path, data)
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


def find_labelme_files(folder: str | Path) -> list[Path]:
    """Sorted ``*.json`` files of one folder (not recursive) that look like labelme.

    A JSON object without a ``shapes`` key (a COCO file, a config) is skipped; a file
    that does not parse is kept so that reading it reports the problem.
    """
    files = sorted(
        p for p in Path(folder).iterdir()
        if p.suffix.lower() == ".json" and p.is_file() and not p.name.startswith(".")
    )
    return [p for p in files if _looks_like_labelme(p)]


def collect_labels(items: Iterable[LabelmeAnnotation | str | Path]) -> list[str]:
    """All shape labels, sorted, with the background name first (class 0).

    The background is ``_background_`` (or ``background`` when only that spelling is
    used); ``__ignore__`` is left out because it maps to the ignore value.

    Args:
        items: Annotations, or JSON paths (only the JSON is read, not the images).
    """
    labels: set[str] = set()
    for item in items:
        if isinstance(item, LabelmeAnnotation):
            labels.update(shape["label"] for shape in item.shapes)
        else:
            path = Path(item)
            labels.update(shape["label"] for shape in _validated_shapes(path, _load_json(path)))
    labels.discard(IGNORE_LABEL)
    background = "background" if "background" in labels and BACKGROUND_LABEL not in labels else BACKGROUND_LABEL
    labels.discard(background)
    return [background, *sorted(labels)]


def parse_label_list(spec: str) -> list[str]:
    """Class names from a ``--labels`` value: a labels file or a comma list.

    A file has one label per line, as labelme's ``labels.txt``: ``__ignore__`` is
    dropped (it maps to the ignore value) and ``_background_`` must come first. A comma
    list ``a,b,c`` is used as given. Either way ``_background_`` is prepended when no
    background label is present, so class 0 is always the background.

    Raises:
        SegkitError: The file is missing or unreadable, the list is empty, has
            duplicates, or names the background anywhere but first.
    """
    path = Path(spec)
    if path.is_file():
        try:
            names = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise SegkitError(path, f"cannot read labels file ({error})") from None
    elif "," not in spec and (path.suffix or "/" in spec or "\\" in spec):
        raise SegkitError(path, "labels file not found (give a file or a comma list a,b,c)")
    else:
        names = spec.split(",")
    return normalize_label_list(names, spec)


def normalize_label_list(names: Iterable[str], source: str | Path | None = None) -> list[str]:
    """Check a class list and put the background first, as :func:`parse_label_list` does.

    Blank names and ``__ignore__`` are dropped; ``_background_`` is prepended when no
    background name is present.

    Raises:
        SegkitError: (naming ``source``) the list is empty, has duplicates, or names
            the background anywhere but first.
    """
    names = [name.strip() for name in names]
    names = [name for name in names if name and name != IGNORE_LABEL]
    if not names:
        raise SegkitError(source, "no labels given")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise SegkitError(source, f"duplicate labels: {', '.join(duplicates)}")
    misplaced = [name for name in names[1:] if name in BACKGROUND_NAMES]
    if misplaced:
        raise SegkitError(source, f"'{misplaced[0]}' must be the first label (class 0)")
    return names if names[0] in BACKGROUND_NAMES else [BACKGROUND_LABEL, *names]


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
    path = annotation.path
    for label, index in [*label_to_index.items(), (IGNORE_LABEL, ignore_index)]:
        if not 0 <= int(index) <= 255:
            raise SegkitError(path, f"class index {index} of '{label}' does not fit in a uint8 mask")
    height, width = annotation.image.shape[:2]
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    outside = 0
    for number, shape in enumerate(annotation.shapes):
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
            canvas.paste(value, (int(points[0][0]), int(points[0][1])), crop)
        else:
            _draw_shape(draw, shape_type, points, value)
    if outside:
        logger.warning(
            "%s: %d point(s) outside the %dx%d image; shapes were clipped to it",
            path, outside, width, height,
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


def _parse_json(path: Path) -> Any:
    """Parse a JSON file, every failure as a SegkitError naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SegkitError(path, "file not found") from None
    except OSError as error:
        raise SegkitError(path, f"cannot read ({error.strerror or error})") from None
    if not raw.strip():
        raise SegkitError(path, "file is empty, not a labelme JSON")
    try:
        return json.loads(raw)  # bytes: UTF-8/16/32 with or without BOM
    except UnicodeDecodeError:
        raise SegkitError(path, "not UTF-8 text, not a labelme JSON") from None
    except json.JSONDecodeError as error:
        raise SegkitError(path, f"invalid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None


def _is_labelme(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


def _load_json(path: Path) -> dict[str, Any]:
    """Parse a JSON file that must be a labelme object (a dict with a ``shapes`` list)."""
    data = _parse_json(path)
    if not _is_labelme(data):
        raise SegkitError(path, "not a labelme annotation (no 'shapes' list)")
    return data


def _looks_like_labelme(path: Path) -> bool:
    try:
        return _is_labelme(_parse_json(path))
    except SegkitError:  # kept, so that converting it reports the problem
        return True


def _validated_shapes(path: Path, data: dict[str, Any]) -> list[dict]:
    """Check every shape has a string label and a list of finite [x, y] points."""
    for number, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise SegkitError(path, f"shape {number}: not an object with a string 'label'")
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
    for candidate in (folder / image_path, folder / portable, folder / PurePosixPath(portable).name):
        if candidate.is_file():
            return candidate
    raise SegkitError(
        json_path, f"image '{image_path}' not found (looked in {json_path.parent}) and no imageData embedded"
    )


def _open_base64_image(json_path: Path, encoded: str, what: str) -> Image.Image:
    """Decode a base64 image field, every failure as a SegkitError naming the JSON."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SegkitError(json_path, f"{what} is not valid base64") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise SegkitError(json_path, f"{what} too large ({image.width}x{image.height} pixels)")
            image.load()
    except SegkitError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise SegkitError(json_path, f"{what} too large, refused as a possible decompression bomb ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise SegkitError(json_path, f"{what} is not a readable image ({error.__class__.__name__})") from None
    return image


def _decode_image_data(json_path: Path, encoded: Any) -> tuple[np.ndarray, str | None]:
    """The embedded image as RGB (EXIF applied) and its format name."""
    if not isinstance(encoded, str):
        raise SegkitError(json_path, "imageData must be a base64 string")
    image = _open_base64_image(json_path, encoded, "imageData")
    image_format = image.format
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not make the pixels unreadable
        pass
    return to_rgb(image), image_format


def _check_declared_size(path: Path, data: dict[str, Any], image: np.ndarray) -> None:
    """Warn (as labelme does) when imageHeight/imageWidth disagree with the image."""
    height, width = image.shape[:2]
    declared = (data.get("imageHeight"), data.get("imageWidth"))
    if any(value is not None and value != actual for value, actual in zip(declared, (height, width))):
        logger.warning(
            "%s: imageHeight x imageWidth is %s x %s but the image is %d x %d; using the image's size",
            path, declared[0], declared[1], height, width,
        )
