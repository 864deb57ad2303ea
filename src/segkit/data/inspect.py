"""Dataset report: pairs, image sizes and modes, classes and their shares, problems.

One pass over the data reads every image and mask (pixel counts from one
histogram per mask); a bad file becomes a problem
in the report and the pass goes on.

Definitions:

- ``image_sizes``: minimum, median and maximum of the widths and of the heights,
  each taken per dimension (``[w, h]``; the median rounded to whole pixels), over
  the images that could be read.
- ``class_pixel_share``: pixels of the class / all mask pixels (ignore pixels
  included), so the class shares and ``ignore_pixel_share`` add up to 1.
- ``class_image_count``: masks holding at least one pixel of the class.

Masks that cannot be read or hold unexpected values are reported and not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.io import peek_image, read_image
from segkit.data.label_map import suggest_label_map
from segkit.data.masks import FIT_MASKS_HINT, check_same_size, read_mask, value_counts
from segkit.data.options import InspectOptions
from segkit.data.sources import DataSource, SampleRef, open_source, split_roles
from segkit.errors import SegkitError

_PROBLEMS_SHOWN = 20  # in the text report; the JSON report lists all


def _image_mode(path: Path) -> str:
    return peek_image(path)[0]  # header only


def _image_place(json_path: Path, image_path: Path | None) -> str:
    """Where a labelme annotation's image was found, as ``inspect`` says it."""
    if image_path is None:
        return "imageData (embedded)"
    folder = image_path.parent.resolve()
    if folder == json_path.parent.resolve():
        return "beside the JSON"
    if folder == (json_path.parent / "images").resolve():
        return "in images/ below the JSON"
    if folder == (json_path.parent.parent / "images").resolve():
        return "in images/ beside the JSON's folder"
    return "at its imagePath"


def _read_pair(
    source: DataSource, ref: SampleRef, problems: list[SegkitError], label_counts: Counter[str], places: Counter[str]
) -> tuple[str | None, tuple[int, ...] | None, np.ndarray | None]:
    """``(image mode, image shape, mask)`` of one sample, None for what could not be read; labelme labels
    and where labelme images were found are counted."""
    if source.layout == "labelme":
        from segkit.data.labelme import rasterize, read_labelme

        try:
            annotation = read_labelme(ref.label_file, source.label_map)
            label_counts.update(shape["label"] for shape in annotation.shapes)
            places[_image_place(ref.label_file, annotation.image_path)] += 1
            labels = rasterize(annotation, source.label_to_index(), ignore_index=source.ignore_index)
        except SegkitError as error:
            problems.append(error)
            return None, None, None
        embedded_or_file = _image_mode(annotation.image_path) if annotation.image_path else "embedded"
        return embedded_or_file, annotation.image.shape, labels
    mode: str | None = None
    shape: tuple[int, ...] | None = None
    mask: np.ndarray | None = None
    try:
        shape = read_image(ref.image_file).shape
        mode = _image_mode(ref.image_file)
    except SegkitError as error:
        problems.append(error)
    try:
        mask = read_mask(
            ref.label_file,
            source.encoding,
            color_table=source.color_table,
            num_classes=source.num_classes,
            ignore_index=source.ignore_index,
        )
    except SegkitError as error:
        problems.append(error)
    return mode, shape, mask


def inspect_dataset(
    data: str | Path,
    *,
    split: str | None = None,
    masks: str | None = None,
    colors: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
    ignore_index: int = 255,
    sheet: str | Path | None = None,
    sheet_count: int = 16,
    progress: bool = False,
    images: str | None = None,
    roi_masks: str | None = None,
    fit_masks: bool = False,
    label_map: str | Path | None = None,
) -> dict[str, Any]:
    """Read every image and mask of a dataset once and report what was found: ``segkit inspect``.

    Problems (an image without a mask, an unreadable file, a size mismatch, unexpected mask
    values) are listed in the report, not raised.

    Args:
        data: dataset folder (labelme, ``images/`` + ``masks/``, VOC, or with ``train/``, ``val/``).
        split: split sub-folder or VOC ImageSets list (default: the training split).
        masks: the mask folder beside ``images/`` (default ``masks``) or an ``{id}`` file pattern.
        colors: colour table (JSON or CSV) of RGB colour-coded masks.
        classes: class names in index order: a list, ``"a,b,c"`` or a file (.txt one per line,
            .json list or colour table, .csv).
        ignore_index: mask value of unlabelled pixels.
        sheet: also draw a contact sheet here (PNG/JPEG): images beside their masks drawn over
            them, with a legend, to see at a glance whether masks line up with images.
        sheet_count: images on the sheet.
        progress: show a progress bar on stderr.
        images: the image folder (default ``images/``) or an ``{id}`` file pattern.
        roi_masks: region-of-interest masks (folder or pattern): pixels outside them count as ignored.
        fit_masks: resize masks that are scaled copies of their images (else they are problems).

    Returns:
        The report of :func:`inspect_source` (``num_pairs``, ``classes``, ``class_pixel_share``,
        ``problems`` ...), with ``sheet``: the contact sheet's path, when one was drawn.

    Raises:
        OptionError: ``sheet_count`` below 1 (:class:`~segkit.data.options.InspectOptions`' checks).
        SegkitError: a folder without image/mask pairs, an unknown split, RGB masks without
            colours, or a bad class list.

    Example:
        >>> import segkit
        >>> report = segkit.inspect("data/", sheet="sheet.png")
        >>> report["num_pairs"], report["class_pixel_share"], report["problems"]
    """
    InspectOptions(classes=classes, ignore_index=ignore_index, split=split, sheet=sheet, sheet_count=sheet_count)
    source = open_source(
        data,
        split=split,
        masks=masks,
        colors=colors,
        classes=classes,
        ignore_index=ignore_index,
        images=images,
        roi_masks=roi_masks,
        fit_masks=fit_masks,
        label_map=label_map,
    )
    report = inspect_source(source, progress=progress)
    if sheet is not None:
        from segkit.data.sheet import write_contact_sheet

        report["sheet"] = str(write_contact_sheet(source, sheet, sheet_count))
    return report


def inspect_source(source: DataSource, progress: bool = False) -> dict[str, Any]:
    """Read every sample once and summarise the dataset (JSON-serialisable).

    Args:
        source: from :func:`segkit.data.sources.open_source`.
        progress: show a progress bar on stderr.

    Returns:
        A dict with ``root``, ``layout``, ``split``, ``split_roles`` (which split trains,
        validates and tests; None without splits), ``num_pairs``, ``num_classes``,
        ``classes``, ``classes_origin`` (where the names came from), ``encoding``, ``ignore_index``, ``image_sizes``, ``image_modes``,
        ``num_mask_pixels``, ``class_pixel_share``, ``class_image_count``,
        ``ignore_pixel_share``, ``problems`` (a list of ``{file, problem}``), ``scaled_masks``
        (how many masks are scaled copies of their images: ``fit_masks`` would fit them) and
        ``label_map_suggestion`` (labelme labels numbered per object: the ``--label-map`` merging
        them, ``{regular expression: class}``; empty when there are none) and ``labelme_images``
        (how many labelme images were found where: beside the JSON, in an ``images/`` folder, or
        embedded; empty for other layouts).
    """
    from tqdm import tqdm

    pixels = np.zeros(256, dtype=np.int64)
    images_with = np.zeros(256, dtype=np.int64)
    sizes: list[tuple[int, int]] = []
    modes: Counter[str] = Counter()
    errors: list[SegkitError] = []
    label_counts: Counter[str] = Counter()
    places: Counter[str] = Counter()
    for ref in tqdm(source.samples, desc="inspect", unit="pair", disable=not progress):
        mode, shape, mask = _read_pair(source, ref, errors, label_counts, places)
        if shape is not None and mode is not None:
            sizes.append((shape[1], shape[0]))
            modes[mode] += 1
        if mask is None:
            continue
        if shape is not None:
            try:
                if source.layout == "labelme":
                    check_same_size(ref.label_file, mask.shape, shape)
                else:  # at the image's size (scaled copies fitted with fit_masks), ignored outside the region
                    mask = source.fitted(ref, mask, shape)
            except SegkitError as error:
                errors.append(error)
        counts = value_counts(mask)
        pixels += counts
        images_with += counts > 0
    report = _report(source, pixels, images_with, sizes, modes, errors)
    report["label_map_suggestion"] = suggest_label_map(label_counts)
    report["labelme_images"] = dict(places.most_common())
    return report


def _report(
    source: DataSource,
    pixels: np.ndarray,
    images_with: np.ndarray,
    sizes: list[tuple[int, int]],
    modes: Counter[str],
    errors: list[SegkitError],
) -> dict[str, Any]:
    total = int(pixels.sum())

    def share(count: int) -> float:
        return float(count) / total if total else 0.0

    problems = {(p.file, p.problem): None for p in source.problems}  # ordered, without repeats
    problems.update({(str(error.path), error.problem): None for error in errors})
    ignore = source.ignore_index
    return {
        "root": str(source.root),
        "layout": source.layout,
        "split": source.split,
        "split_roles": asdict(split_roles(source.splits)) if source.splits else None,
        "num_pairs": len(source),
        "num_classes": source.num_classes,
        "classes": list(source.classes),
        "classes_origin": source.classes_origin,
        "encoding": source.encoding,
        "ignore_index": ignore,
        "image_sizes": _size_summary(sizes),
        "image_modes": dict(sorted(modes.items())),
        "num_mask_pixels": total,
        "class_pixel_share": {name: share(pixels[i]) for i, name in enumerate(source.classes)},
        "class_image_count": {name: int(images_with[i]) for i, name in enumerate(source.classes)},
        "ignore_pixel_share": share(pixels[ignore]) if 0 <= ignore < 256 else 0.0,
        "problems": [{"file": file, "problem": problem} for file, problem in problems],
        "scaled_masks": sum(FIT_MASKS_HINT in problem for _, problem in problems),
    }


def _size_summary(sizes: list[tuple[int, int]]) -> dict[str, list[int]] | None:
    if not sizes:
        return None
    array = np.asarray(sizes)
    return {
        "min": array.min(axis=0).tolist(),
        "median": np.round(np.median(array, axis=0)).astype(int).tolist(),
        "max": array.max(axis=0).tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a human-readable table."""
    split = f", split {report['split']}" if report["split"] else ""
    sizes = report["image_sizes"]
    size_text = ", ".join(f"{key} {w}x{h}" for key, (w, h) in sizes.items()) if sizes else "no readable images"
    modes = ", ".join(f"{mode} {count}" for mode, count in report["image_modes"].items()) or "-"
    lines = [f"dataset   {report['root']} ({report['layout']}{split})"]
    if report["split_roles"]:
        roles = ", ".join(f"{role}: {name}" for role, name in report["split_roles"].items() if name)
        lines.append(f"splits    {roles}")
    lines += [
        f"pairs     {report['num_pairs']}",
        f"encoding  {report['encoding']} (ignore value {report['ignore_index']})",
        f"images    {size_text} (w x h, per dimension)",
        f"modes     {modes}",
        *(
            [f"labelme   images {', '.join(f'{place}: {n}' for place, n in report['labelme_images'].items())}"]
            if report.get("labelme_images")
            else []
        ),
        f"classes   {report['num_classes']} (from {report['classes_origin']})",
        "",
    ]
    width = max(len(name) for name in [*report["classes"], "(ignore)", "class"])
    lines.append(f"  {'index':>5}  {'class':<{width}}  {'pixels %':>9}  {'images':>6}")
    for index, name in enumerate(report["classes"]):
        share = 100 * report["class_pixel_share"][name]
        lines.append(f"  {index:>5}  {name:<{width}}  {share:>9.3f}  {report['class_image_count'][name]:>6}")
    ignore_share = 100 * report["ignore_pixel_share"]
    lines.append(f"  {report['ignore_index']:>5}  {'(ignore)':<{width}}  {ignore_share:>9.3f}")
    problems = report["problems"]
    lines += ["", f"problems  {len(problems)}"]
    lines += [f"  {item['file']}: {item['problem']}" for item in problems[:_PROBLEMS_SHOWN]]
    if len(problems) > _PROBLEMS_SHOWN:
        lines.append(f"  ... and {len(problems) - _PROBLEMS_SHOWN} more (see --json)")
    if report.get("label_map_suggestion"):
        lines += ["", "labels numbered per object: this --label-map (YAML) would make one class of each kind:"]
        lines += [f"  '{pattern}': {name}" for pattern, name in report["label_map_suggestion"].items()]
    if report["scaled_masks"]:
        lines.append(
            f"  {report['scaled_masks']} masks are scaled copies of their images: add --fit-masks to resize them "
            "(nearest) as they are read"
        )
    return "\n".join(lines)
