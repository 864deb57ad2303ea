"""A synthetic labelme dataset, generated here, for ``make demo`` and tests (no third-party files).

Each image is a textured background with a few coloured shapes on it: disks
(labelme ``circle`` shapes), triangles and quadrilaterals (``polygon`` shapes).
Colours and textures vary per image so the model has to use shape and colour
together, yet a small U-Net learns it in a couple of CPU minutes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEMO_CLASSES = ("_background_", "disk", "triangle", "square")
_BASE_COLORS = {"disk": (220, 60, 50), "triangle": (40, 90, 220), "square": (60, 190, 70)}


@dataclass(frozen=True)
class DemoSpec:
    num_images: int = 48
    width: int = 160
    height: int = 120
    seed: int = 0


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random texture: low-resolution noise up-sampled, plus a gradient and fine grain."""
    coarse = rng.uniform(60, 190, size=(height // 20 + 2, width // 20 + 2, 3)).astype(np.float32)
    smooth = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32
    )
    gradient = np.linspace(-25, 25, width, dtype=np.float32)[None, :, None] * rng.choice([-1.0, 1.0])
    grain = rng.normal(0, 8, size=(height, width, 3)).astype(np.float32)
    return np.clip(smooth * 0.8 + 20 + gradient + grain, 0, 255)


def _shape(rng: np.random.Generator, label: str, width: int, height: int) -> dict:
    """A labelme shape dict for ``label`` at a random place and size."""
    radius = rng.uniform(0.09, 0.17) * min(width, height)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    if label == "disk":
        points = [[cx, cy], [cx + radius, cy]]
        shape_type = "circle"
    else:
        corners = 3 if label == "triangle" else 4
        start = rng.uniform(0, 2 * math.pi)
        points = [
            [
                cx + radius * math.cos(start + 2 * math.pi * k / corners),
                cy + radius * math.sin(start + 2 * math.pi * k / corners),
            ]
            for k in range(corners)
        ]
        shape_type = "polygon"
    return {
        "label": label,
        "points": [[round(x, 2), round(y, 2)] for x, y in points],
        "group_id": None,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
        "mask": None,
    }


def _paint(image: np.ndarray, shape: dict, colour: np.ndarray) -> None:
    """Draw a shape in ``colour`` with a little shading, in place."""
    from PIL import ImageDraw

    height, width = image.shape[:2]
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    points = [tuple(point) for point in shape["points"]]
    if shape["shape_type"] == "circle":
        (cx, cy), (px, py) = points
        radius = math.hypot(px - cx, py - cy)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1, outline=1)
    else:
        draw.polygon(points, fill=1, outline=1)
    inside = np.asarray(layer, dtype=bool)
    shade = np.linspace(0.85, 1.1, width, dtype=np.float32)[None, :, None]
    image[inside] = np.clip(colour[None, :] * shade[0, np.nonzero(inside)[1]], 0, 255)


def generate_demo_dataset(out: str | Path, spec: DemoSpec = DemoSpec()) -> list[Path]:
    """Write ``spec.num_images`` PNG images with labelme JSON files into ``out``; return the JSON paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    labels = DEMO_CLASSES[1:]
    written = []
    for index in range(spec.num_images):
        image = _texture(rng, spec.height, spec.width)
        shapes = []
        for _ in range(int(rng.integers(2, 5))):
            label = labels[int(rng.integers(len(labels)))]
            shape = _shape(rng, label, spec.width, spec.height)
            colour = np.clip(np.array(_BASE_COLORS[label], dtype=np.float32) + rng.normal(0, 18, 3), 0, 255)
            _paint(image, shape, colour)
            shapes.append(shape)
        name = f"demo_{index:03d}"
        Image.fromarray(image.astype(np.uint8)).save(out / f"{name}.png")
        annotation: dict[str, Any] = {
            "version": "5.5.0",
            "flags": {},
            "shapes": shapes,
            "imagePath": f"{name}.png",
            "imageData": None,
            "imageHeight": spec.height,
            "imageWidth": spec.width,
        }
        path = out / f"{name}.json"
        path.write_text(json.dumps(annotation, indent=1), encoding="utf-8")
        written.append(path)
    (out / "labels.txt").write_text("__ignore__\n" + "\n".join(DEMO_CLASSES) + "\n", encoding="utf-8")
    return written
