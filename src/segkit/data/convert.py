"""Convert a folder of labelme annotations into an images/ + masks/ dataset.

Output layout (built in a temporary sibling folder and renamed into place, so a
failure leaves nothing behind and an existing folder is replaced only once the new
one is complete)::

    OUT/images/<stem>.jpg|png   the decoded, EXIF-applied RGB image
    OUT/masks/<stem>.png        uint8 class-index PNG with segkit's palette (0 background, 255 ignore)
    OUT/class_names.txt         one class name per line, in index order
    OUT/visualization/<stem>.jpg  mask overlaid on the image with a legend (unless noviz)
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segkit.data import labelme
from segkit.data.io import atomic_write, make_staging_dir, write_mask
from segkit.errors import SegkitError
from segkit.visualize import PALETTE, overlay

IGNORE_INDEX = 255
JPEG_QUALITY = 95


@dataclass
class ConvertResult:
    """What :func:`convert_labelme` wrote.

    Attributes:
        out: The output folder.
        class_names: Class names in index order (background first).
        num_images: Number of image/mask pairs written.
        warnings: Warnings raised while converting (points clipped, size mismatches).
    """

    out: Path
    class_names: list[str]
    num_images: int
    warnings: list[str] = field(default_factory=list)


def convert_labelme(
    src: str | Path,
    out: str | Path,
    labels: Sequence[str] | None = None,
    noviz: bool = False,
    overwrite: bool = False,
) -> ConvertResult:
    """Convert every labelme JSON of ``src`` into images, index masks and class names.

    Images are saved as PNG when the source image is PNG, otherwise as JPEG quality 95
    (the decoded pixels with EXIF orientation applied, so image and mask always agree).

    Args:
        src: Folder with labelme ``.json`` files (not searched recursively).
        out: Output folder; must not exist or be empty unless ``overwrite``.
        labels: Class names in index order (see :func:`segkit.data.labelme.parse_label_list`);
            None collects them from all files (background first, then sorted).
        noviz: Skip the ``visualization/`` overlays.
        overwrite: Replace a non-empty ``out`` (only once the new one is complete).

    Raises:
        SegkitError: No labelme files, output not empty, an unknown label, or any
            unreadable annotation or image. Nothing is written in that case.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise SegkitError(src, "not a folder" if src.exists() else "folder not found")
    files = labelme.find_labelme_files(src)
    if not files:
        raise SegkitError(src, "no labelme JSON files found")
    _check_output(src, out, overwrite)
    class_names = labelme.collect_labels(files) if labels is None else labelme.normalize_label_list(labels)
    if len(class_names) > IGNORE_INDEX:
        raise SegkitError(src, f"{len(class_names)} classes do not fit in a uint8 mask (at most {IGNORE_INDEX})")
    label_to_index = {name: index for index, name in enumerate(class_names)}

    temp = make_staging_dir(out, prefix=".segkit-convert-")
    try:
        with _captured_warnings() as messages:
            for json_path in files:
                _convert_one(json_path, temp, label_to_index, class_names, noviz)
        atomic_write(temp / "class_names.txt", lambda t: t.write_text("\n".join(class_names) + "\n", encoding="utf-8"))
        _move_into_place(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return ConvertResult(out, class_names, len(files), messages)


def _check_output(src: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SegkitError(out, "exists and is not a folder")
    if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
        raise SegkitError(out, "is (or contains) the source folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SegkitError(out, "exists and is not empty; use --overwrite")


def _convert_one(
    json_path: Path, out: Path, label_to_index: dict[str, int], class_names: list[str], noviz: bool
) -> None:
    annotation = labelme.read_labelme(json_path)
    mask = labelme.rasterize(annotation, label_to_index, IGNORE_INDEX)
    stem = json_path.stem
    suffix = ".png" if annotation.image_format == "PNG" else ".jpg"
    _write_rgb(out / "images" / f"{stem}{suffix}", annotation.image)
    write_mask(out / "masks" / f"{stem}.png", mask, PALETTE)
    if not noviz:
        _write_rgb(out / "visualization" / f"{stem}.jpg", visualization(annotation.image, mask, class_names))


def _write_rgb(path: Path, image: np.ndarray) -> None:
    """Save RGB pixels as PNG or JPEG (quality 95) by suffix."""
    pil = Image.fromarray(image)
    if path.suffix == ".png":
        atomic_write(path, lambda temp: pil.save(temp, format="PNG"))
    else:
        atomic_write(path, lambda temp: pil.save(temp, format="JPEG", quality=JPEG_QUALITY))


def visualization(image: np.ndarray, mask: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """The mask overlaid on the image, with a legend of the classes present on the right."""
    present = [int(value) for value in np.unique(mask) if value != 0]
    if not present:
        return overlay(image, mask)
    names = [class_names[value] if value < len(class_names) else labelme.IGNORE_LABEL for value in present]
    # A legend is a few swatches and names: PIL draws them; no library does this layout for us.
    font = ImageFont.load_default()
    row = 18
    text_width = max(int(font.getlength(name)) for name in names)
    height = max(image.shape[0], row * len(present) + 8)
    legend = Image.new("RGB", (text_width + 36, height), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for number, (value, name) in enumerate(zip(present, names)):
        top = 4 + number * row
        draw.rectangle([6, top + 2, 20, top + 14], fill=tuple(int(c) for c in PALETTE[value]), outline=(0, 0, 0))
        draw.text((26, top + 1), name, fill=(0, 0, 0), font=font)
    blended = np.full((height, image.shape[1], 3), 255, dtype=np.uint8)
    blended[: image.shape[0]] = overlay(image, mask)
    return np.concatenate([blended, np.asarray(legend)], axis=1)


@contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    """Collect the messages labelme reading logs as warnings (they still reach the log)."""
    messages: list[str] = []

    class _Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    collector = _Collector(logging.WARNING)
    source = logging.getLogger(labelme.__name__)
    source.addHandler(collector)
    try:
        yield messages
    finally:
        source.removeHandler(collector)


def _move_into_place(temp: Path, out: Path) -> None:
    """Rename the finished folder to ``out``, replacing an existing one only on success."""
    if not out.exists():
        os.replace(temp, out)
        return
    old = temp.with_name(temp.name + "-old")
    os.replace(out, old)
    try:
        os.replace(temp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
