"""Convert a folder of labelme annotations into an images/ + masks/ dataset.

Output layout (built in a temporary sibling folder and renamed into place, so a
failure leaves nothing behind and an existing folder is replaced only once the new
one is complete)::

    OUT/images/<stem>.jpg|png   the decoded, EXIF-applied RGB image
    OUT/masks/<stem>.png        uint8 class-index PNG with segkit's palette (0 background, 255 ignore)
    OUT/class_names.txt         one class name per line, in index order
    OUT/visualization/<stem>.jpg  mask overlaid on the image with a legend (unless noviz)
    OUT/label_map.suggested.yaml  when labels look numbered per object: the --label-map merging them
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segkit.data import labelme
from segkit.data.classes import (
    IGNORE_LABEL,
    find_class_file,
    read_class_file,
    read_class_list,
    with_background_first,
)
from segkit.data.io import read_image, write_mask
from segkit.data.label_map import (
    SUGGESTED_FILE,
    LabelMap,
    check_known_labels,
    describe_groups,
    read_label_map,
    suggest_label_map,
    suggestion_yaml,
)
from segkit.data.options import ConvertLabelmeOptions, ConvertMasksOptions, read_options
from segkit.errors import SegkitError
from segkit.files import atomic_write, built_into, check_out_folder, check_output_path
from segkit.visualize import PALETTE, overlay

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
JPEG_QUALITY = 95
STAGING_PREFIX = ".segkit-convert-"  # the hidden folder OUT is built in (stale ones are removed on the next run)


@dataclass
class ConvertResult:
    """What :func:`convert_labelme` (or :func:`convert_masks`) wrote.

    Attributes:
        out: The output folder.
        class_names: Class names in index order (background first).
        num_images: Number of image/mask pairs written.
        warnings: Warnings raised while converting (points clipped, size mismatches).
        classes_origin: Where the names came from (``"--classes labels.txt"``), or ``None``
            when they were collected from the annotations.
    """

    out: Path
    class_names: list[str]
    num_images: int
    warnings: list[str] = field(default_factory=list)
    classes_origin: str | None = None

    def format(self) -> str:
        """Lines for the command line: the classes, what was written, the warnings."""
        count = f"{len(self.class_names)} labels"
        summary = f"using {count} ({self.classes_origin})" if self.classes_origin else f"found {count}"
        lines = [f"{summary}: {', '.join(self.class_names)}", f"converted {self.num_images} images -> {self.out}"]
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s), see above")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Converted:
    """One annotation whose image is written: what its mask still needs (the JSON is not parsed again)."""

    json_path: Path
    shapes: list[dict]
    size: tuple[int, int]
    image_file: Path
    source_image: Path | None


def convert_labelme(src: str | Path, out: str | Path, **options: Any) -> ConvertResult:
    """Convert every labelme JSON of ``src`` into images, index masks and class names: ``segkit convert labelme``.

    Images are saved as PNG when the source image is PNG, otherwise as JPEG quality 95
    (the decoded pixels with EXIF orientation applied, so image and mask always agree).
    Each JSON file is parsed once: its image is written on the first pass, its mask
    once every label is known.

    Args:
        src: Folder with labelme ``.json`` files (not searched recursively).
        out: Output folder; must not exist or be empty unless ``overwrite``. It may not
            be, contain or lie inside ``src`` or a folder of the annotations' images.
        **options: the command's options, as :class:`~segkit.data.options.ConvertLabelmeOptions`
            declares them:

            - ``classes``: class names in index order: a list, ``"a,b,c"`` or a class file
              (labelme's ``labels.txt``: one per line, ``__ignore__`` skipped; JSON; CSV), read by
              :func:`segkit.data.classes.read_class_list`; ``_background_`` is put first when no
              background is named. None: a ``labels.txt`` in ``src`` (labelme's class file, which
              ``segkit predict --format labelme`` writes beside its annotations); else the labels
              of all files (background first, then sorted).
            - ``noviz=False``: skip the ``visualization/`` overlays.
            - ``overwrite=False``: replace a non-empty ``out`` (only once the new one is complete).
            - ``label_map``: a ``--label-map`` file (YAML or JSON ``label: class``, regular
              expressions allowed): labels become classes through it. Without one, labels
              numbered per object (``bottle1`` … ``bottle54``) are said, and the map merging them
              is written to ``OUT/label_map.suggested.yaml``.

    Raises:
        SegkitError: No labelme files, output not empty or overlapping the inputs, a bad
            class list, an unknown or malformed label, or any unreadable annotation or
            image. Nothing is written in that case.

    Example:
        >>> import segkit
        >>> result = segkit.convert_labelme("annotations/", "data/", classes="annotations/labels.txt")
        >>> result.class_names, result.num_images
    """
    settings = ConvertLabelmeOptions(**options)
    classes, noviz, overwrite, label_map = settings.classes, settings.noviz, settings.overwrite, settings.label_map
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise SegkitError(src, "not a folder" if src.exists() else "folder not found")
    files = labelme.find_labelme_files(src)
    if not files:
        raise SegkitError(src, "no labelme JSON files found")
    _check_output(src, out, overwrite)
    # labelme's own labels.txt (which `segkit predict --format labelme` writes beside its pre-labels)
    class_file = find_class_file(src, search_parent=False, names=(labelme.LABELS_FILE,)) if classes is None else None
    listed = read_class_list(classes) if classes is not None else read_class_file(class_file) if class_file else None
    given = None if listed is None else with_background_first(listed)
    rules = None if label_map is None else read_label_map(label_map)
    with built_into(out, STAGING_PREFIX) as temp:
        with _captured_warnings() as messages:
            converted = [item for item in (_write_image(path, temp, rules) for path in files) if item is not None]
            if not converted:
                raise SegkitError(src, "no labelme JSON files found")
            counts = Counter(shape["label"] for item in converted for shape in item.shapes)
            if given is not None:
                first_files: dict[str, Path] = {}
                for item in converted:
                    for shape in item.shapes:
                        first_files.setdefault(shape["label"], item.json_path)
                check_known_labels(counts, [*given.names, IGNORE_LABEL], given.origin, first_files, src)
            class_names = given.names if given else labelme.labels_in_class_order(counts)
            suggestion = suggest_label_map(counts) if rules is None else {}
            if suggestion:
                text = suggestion_yaml(suggestion)
                atomic_write(temp / SUGGESTED_FILE, lambda t: t.write_text(text, encoding="utf-8"))
                logger.warning(
                    "labels look numbered per object (%s): each became a class; to merge them, convert again "
                    "with --label-map %s (edit it first if needed)",
                    describe_groups(counts),
                    out / SUGGESTED_FILE,
                )
            if len(class_names) > IGNORE_INDEX:
                raise SegkitError(
                    src, f"{len(class_names)} classes do not fit in a uint8 mask (at most {IGNORE_INDEX})"
                )
            label_to_index = {name: index for index, name in enumerate(class_names)}
            for item in converted:
                _write_mask(item, temp, label_to_index, class_names, noviz)
        atomic_write(temp / "class_names.txt", lambda t: t.write_text("\n".join(class_names) + "\n", encoding="utf-8"))
        check_output_path(out, [item.source_image for item in converted if item.source_image], "output folder")
    return ConvertResult(out, class_names, len(converted), messages, given.origin if given else None)


def convert_masks(src: str | Path, out: str | Path, *, split: str | None = None, **options: Any) -> ConvertResult:
    """A dataset as segkit reads it, written as ``images/`` + ``masks/`` + ``class_names.txt``: ``segkit convert masks``.

    Whatever the layout and the read options (``images``/``masks`` patterns, ``fit_masks``,
    ``roi_masks``, ``colors``, ``label_map``), each image file is copied as it is and its mask
    written as the class indices segkit trains on: fitted to the photo with ``fit_masks``,
    the ignore value outside a region of interest, colours and labels mapped to indices. A
    fixed copy, that any tool reads without those options.

    Args:
        src: the dataset folder.
        out: the output folder; must not exist or be empty unless ``overwrite``.
        split: the split of a dataset with splits (default: the training split).
        **options: the command's options, as :class:`~segkit.data.options.ConvertMasksOptions`
            declares them (``overwrite=False``: replace a non-empty ``out``, only once the new
            one is complete; ``classes``: class names, as ``segkit train --classes``;
            ``ignore_index=255``: mask value of unlabelled pixels), and the read options of
            :class:`~segkit.data.options.ReadOptions` (``images``, ``masks``, ``roi_masks``,
            ``fit_masks``, ``colors``, ``label_map``).

    Raises:
        SegkitError: unreadable data (every unusable file named at once), an output over the input.

    Example:
        >>> import segkit
        >>> segkit.convert_masks("people/", "people_fixed/", images="Training_Images", masks="Ground_Truth", fit_masks=True)
    """
    from segkit.data.sources import open_source, usable

    read = read_options(options)
    settings = ConvertMasksOptions(**options)
    src, out = Path(src), Path(out)
    _check_output(src, out, settings.overwrite)
    source = usable(open_source(src, split=split, classes=settings.classes, ignore_index=settings.ignore_index, **read))
    with built_into(out, STAGING_PREFIX) as temp:
        for index, ref in enumerate(source.samples):
            sample = source.load(index)
            image = Path(ref.image) if ref.image is not None else None
            if image is None:  # a labelme sample: its decoded image
                _write_rgb(temp / "images" / f"{ref.name}.png", sample.image)
            else:
                target = temp / "images" / f"{ref.name}{image.suffix.lower()}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image, target)
            write_mask(temp / "masks" / f"{ref.name}.png", sample.mask, PALETTE)
        names = "\n".join(source.classes) + "\n"
        atomic_write(temp / "class_names.txt", lambda t: t.write_text(names, encoding="utf-8"))
    return ConvertResult(out, list(source.classes), len(source.samples), [], source.classes_origin)


def _check_output(src: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SegkitError(out, "exists and is not a folder")
    check_output_path(out, [src], "output folder")
    check_out_folder(out, overwrite)


def _write_image(json_path: Path, out: Path, label_map: LabelMap | None) -> _Converted | None:
    """Read one annotation (the one parse of its JSON) and write its image; None when it is not labelme."""
    try:
        annotation = labelme.read_labelme(json_path, label_map)
    except labelme.NotLabelme:
        return None
    suffix = ".png" if annotation.image_format == "PNG" else ".jpg"
    image_file = out / "images" / f"{json_path.stem}{suffix}"
    _write_rgb(image_file, annotation.image)
    return _Converted(json_path, annotation.shapes, annotation.image.shape[:2], image_file, annotation.image_path)


def _write_mask(
    item: _Converted, out: Path, label_to_index: dict[str, int], class_names: list[str], noviz: bool
) -> None:
    mask = labelme.rasterize_shapes(item.json_path, item.shapes, item.size, label_to_index, IGNORE_INDEX)
    stem = item.json_path.stem
    write_mask(out / "masks" / f"{stem}.png", mask, PALETTE)
    if not noviz:  # the image as written (JPEG: within quality 95 of the source): a preview
        _write_rgb(out / "visualization" / f"{stem}.jpg", visualization(read_image(item.image_file), mask, class_names))


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
    names = [class_names[value] if value < len(class_names) else IGNORE_LABEL for value in present]
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
