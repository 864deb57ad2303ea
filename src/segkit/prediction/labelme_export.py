"""Predicted masks as labelme annotations (model-assisted labelling: predict, correct in labelme, retrain).

Each connected region of each class becomes one shape labelled with the class name:

- a ``polygon`` along the region's outer contour (OpenCV ``findContours``), simplified with
  the Douglas-Peucker algorithm (``approxPolyDP``) within ``tolerance`` pixels, when the
  region has no holes and the polygon, drawn as labelme draws it, gives back the region
  (at most ``max_error`` of its pixels wrong, else the unsimplified contour is tried);
- otherwise a ``mask`` shape (labelme >= 5.3: a base64 PNG of the region's bounding box,
  ``points`` its top-left and bottom-right pixels), which keeps holes and thin parts exact.

Regions smaller than ``min_area`` pixels (specks) are dropped, and the background class
gets no shapes (labelme's unlabelled pixels are the background). Shapes are ordered by
decreasing area, so that where a simplified polygon spills over a neighbour, the smaller
region (drawn later) wins. ``segkit convert labelme`` turns the files back into masks.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from segkit.data.labelme import IGNORE_LABEL
from segkit.files import atomic_write

LABELME_VERSION = "5.5.0"  # the format written (mask shapes need labelme 5.3 or newer)
JSON_SUFFIX = ".json"


@dataclass(frozen=True)
class LabelmeOptions:
    """How masks become shapes.

    Attributes:
        tolerance: largest distance (pixels) of a simplified polygon from the region's contour.
        min_area: regions of fewer pixels are dropped.
        max_error: largest share of a region's pixels a polygon may get wrong before the
            exact contour (then a mask shape) is used instead.
        image_data: embed the image as base64 ``imageData`` (else only ``imagePath``).
    """

    tolerance: float = 1.0
    min_area: int = 16
    max_error: float = 0.02
    image_data: bool = False


def mask_to_shapes(
    mask: np.ndarray,
    classes: Sequence[str],
    *,
    background: int | None = 0,
    options: LabelmeOptions = LabelmeOptions(),
) -> list[dict[str, Any]]:
    """labelme shapes (dicts as labelme writes them) of every region of every class but ``background``."""
    regions: list[tuple[int, dict[str, Any]]] = []
    for index, name in enumerate(classes):
        if index == background:
            continue
        binary = (mask == index).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        for component in range(1, count):
            left, top, width, height, area = (int(value) for value in stats[component])
            if area < options.min_area:
                continue
            crop = (labels[top : top + height, left : left + width] == component).astype(np.uint8)
            regions.append((area, _region_shape(crop, left, top, name, options)))
    regions.sort(key=lambda item: -item[0])  # stable: equal areas keep class order
    return [shape for _, shape in regions]


def _region_shape(crop: np.ndarray, left: int, top: int, label: str, options: LabelmeOptions) -> dict[str, Any]:
    """One region (a 0/1 crop at ``left, top``) as a polygon shape, or a mask shape when no polygon fits."""
    padded = np.pad(crop, 1)  # contours of regions touching the crop's border stay closed
    contours, hierarchy = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    has_holes = hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())
    if not has_holes:
        outer = max(contours, key=len)
        for epsilon in (options.tolerance, options.tolerance / 2, 0.0):
            points = cv2.approxPolyDP(outer, epsilon, True)[:, 0] if epsilon else outer[:, 0]
            if len(points) >= 3 and _polygon_error(points, crop) <= options.max_error:
                return _shape(label, [[float(x + left - 1), float(y + top - 1)] for x, y in points.tolist()], "polygon")
    height, width = crop.shape
    shape = _shape(label, [[float(left), float(top)], [float(left + width - 1), float(top + height - 1)]], "mask")
    shape["mask"] = _png_base64(crop.astype(bool))
    return shape


def _polygon_error(points: np.ndarray, crop: np.ndarray) -> float:
    """Share of the region's pixels that the polygon (in padded-crop coordinates) draws differently."""
    canvas = Image.new("L", (crop.shape[1] + 2, crop.shape[0] + 2), 0)
    # Drawn as labelme's shape_to_mask (and segkit.data.labelme.rasterize) draws polygons: outline and fill.
    ImageDraw.Draw(canvas).polygon([tuple(point) for point in points.tolist()], outline=1, fill=1)
    drawn = np.asarray(canvas)[1:-1, 1:-1]
    outside = int(np.asarray(canvas).sum() - drawn.sum())
    return (int(np.count_nonzero(drawn != crop)) + outside) / max(int(crop.sum()), 1)


def _shape(label: str, points: list[list[float]], shape_type: str) -> dict[str, Any]:
    return {
        "label": label,
        "points": points,
        "group_id": None,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
        "mask": None,
    }


def _png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def labelme_document(
    mask: np.ndarray,
    classes: Sequence[str],
    image_path: Path,
    json_dir: Path,
    *,
    image: np.ndarray | None = None,
    background: int | None = 0,
    options: LabelmeOptions = LabelmeOptions(),
) -> dict[str, Any]:
    """The labelme JSON object of one predicted mask.

    Args:
        mask: ``(H, W)`` class indices at the image's displayed size (EXIF orientation applied).
        classes: class names (the labels).
        image_path: the image file; ``imagePath`` is written relative to ``json_dir``.
        json_dir: the folder the JSON file will be in.
        image: the ``(H, W, 3)`` image as predicted; embedded when ``options.image_data``.
        background: the class left unlabelled (no shapes).
        options: simplification and embedding.
    """
    height, width = mask.shape
    relative = Path(os.path.relpath(Path(image_path).resolve(), Path(json_dir).resolve())).as_posix()
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": mask_to_shapes(mask, classes, background=background, options=options),
        "imagePath": relative,
        "imageData": _image_data(Path(image_path), image) if options.image_data else None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }


def _image_data(path: Path, image: np.ndarray | None) -> str:
    """base64 of the image file, or of a PNG of the pixels as shown when the file carries an EXIF rotation."""
    with Image.open(path) as opened:
        rotated = opened.getexif().get(0x0112, 1) not in (1, None)  # 0x0112: EXIF orientation
    if rotated and image is not None:
        return _png_base64(image)
    return base64.b64encode(path.read_bytes()).decode("ascii")


def write_labelme(path: str | Path, document: dict[str, Any]) -> None:
    """Write a labelme JSON object atomically (UTF-8, indented as labelme does)."""
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def label_list(classes: Sequence[str]) -> str:
    """``labels.txt`` as labelme reads it (``__ignore__`` first, then the classes in index order);
    ``segkit convert labelme --labels labels.txt`` keeps the model's class order."""
    return "\n".join([IGNORE_LABEL, *classes]) + "\n"
