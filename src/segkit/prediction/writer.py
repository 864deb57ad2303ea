"""Predict a list of image files into a folder of masks, all or nothing.

Used by ``segkit predict``: inputs are expanded from files, folders and globs;
masks (and optional colour images and overlays) are written into a temporary
sibling of the output folder and moved into it only when every image succeeded,
so an error never leaves half the outputs behind or touches what the folder held.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segkit.data.io import atomic_write, is_image_file, make_staging_dir, write_image, write_mask
from segkit.errors import SegkitError
from segkit.prediction.labelme_export import (
    JSON_SUFFIX,
    LABELS_FILE,
    LabelmeOptions,
    label_list,
    labelme_document,
    write_labelme,
)
from segkit.prediction.predictor import Predictor
from segkit.visualize import colorize, legend, overlay

MASK_SUFFIX = ".png"
COLOR_SUFFIX = "_color.png"
OVERLAY_SUFFIX = "_overlay.jpg"
LEGEND_FILE = "legend.png"  # with --color: the class colours and names, once per folder


def shard_for_this_rank() -> tuple[int, int, str] | None:
    """``(rank, world_size, device)`` when running under ``torchrun`` with several processes, else None.

    Prediction needs no communication between ranks, so no process group is made:
    each rank takes every ``world_size``-th input and writes its own masks.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    import torch

    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return rank, world_size, device


def expand_inputs(patterns: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted), globs expanded (sorted; ``**`` recursive).

    Globs are expanded here so that quoted patterns work on every shell. A path
    given twice (e.g. a file and a folder holding it) is kept once.

    Raises:
        SegkitError: a path that does not exist, or a folder/glob without images.
    """
    found: list[Path] = []
    for pattern in map(str, patterns):
        path = Path(pattern)
        if path.is_dir():
            images = sorted(item for item in path.iterdir() if item.is_file() and is_image_file(item))
            if not images:
                raise SegkitError(path, "folder holds no image files")
        elif path.exists():
            images = [path]
        elif glob.has_magic(pattern):
            images = sorted(Path(item) for item in glob.glob(pattern, recursive=True) if is_image_file(Path(item)))
            if not images:
                raise SegkitError(pattern, "pattern matches no image files")
        else:
            raise SegkitError(path, "not found")
        found += images
    unique: dict[Path, Path] = {}
    for image in found:
        unique.setdefault(image.resolve(), image)
    return list(unique.values())


def output_stems(
    inputs: Sequence[Path],
    out_dir: Path,
    color: bool,
    overlay_images: bool,
    mask_suffix: str = MASK_SUFFIX,
    folder_files: Sequence[str] = (),
) -> list[str]:
    """The output stem of each input, refusing two inputs that would write the same file.

    ``mask_suffix`` is what the mask is written as (``.json`` for labelme), ``folder_files``
    the names written once for the whole folder (``legend.png`` ...).

    Raises:
        SegkitError: two inputs share a stem (or one's outputs collide with another's or with
            a folder file), or an output would overwrite an input image.
    """
    suffixes = [mask_suffix] + [COLOR_SUFFIX] * color + [OVERLAY_SUFFIX] * overlay_images
    owners: dict[str, Path] = {name: Path(f"segkit's {name}") for name in folder_files}
    input_paths = {path.resolve() for path in inputs}
    for path in inputs:
        for suffix in suffixes:
            name = path.stem + suffix
            if name in owners:
                raise SegkitError(path, f"writes {name} as {owners[name]} does; rename one of them")
            owners[name] = path
            if (out_dir / name).resolve() in input_paths:
                raise SegkitError(out_dir / name, "is an input image and would be overwritten; choose another --out")
    return [path.stem for path in inputs]


@dataclass
class PredictionSummary:
    """What a prediction run found, per class.

    Attributes:
        classes: class names in index order.
        pixels: ``(C,)`` predicted pixels per class.
        images: ``(C,)`` number of images in which each class was predicted.
        num_images: images predicted.
    """

    classes: list[str]
    pixels: np.ndarray
    images: np.ndarray
    num_images: int = 0

    @classmethod
    def empty(cls, classes: Sequence[str]) -> PredictionSummary:
        return cls(list(classes), np.zeros(len(classes), np.int64), np.zeros(len(classes), np.int64))

    def add(self, mask: np.ndarray) -> None:
        counts = np.bincount(mask.ravel(), minlength=len(self.classes))[: len(self.classes)]
        self.pixels += counts
        self.images += counts > 0
        self.num_images += 1

    def format(self) -> str:
        """A table: class, predicted pixels, share of all pixels, images containing the class."""
        total = max(int(self.pixels.sum()), 1)
        width = max(len("class"), *(len(name) for name in self.classes))
        lines = [f"{'class':<{width}}  {'pixels':>14}  {'share':>7}  {'images':>9}"]
        for name, pixels, images in zip(self.classes, self.pixels.tolist(), self.images.tolist()):
            lines.append(f"{name:<{width}}  {pixels:>14,}  {pixels / total:>7.2%}  {f'{images}/{self.num_images}':>9}")
        return "\n".join(lines)


def predict_to_folder(
    predictor: Predictor,
    inputs: Sequence[Path],
    out_dir: str | Path,
    *,
    color: bool = False,
    overlay_images: bool = False,
    alpha: float = 0.5,
    batch_size: int = 8,
    labelme: LabelmeOptions | None = None,
) -> PredictionSummary:
    """Write ``<stem>.png`` index masks (palette PNG at each input's size) for ``inputs`` into ``out_dir``.

    Args:
        predictor: the trained model.
        inputs: image files (see :func:`expand_inputs`).
        out_dir: output folder; created if missing, files of other names in it are kept.
        color: also write ``<stem>_color.png``, the mask in class colours.
        overlay_images: also write ``<stem>_overlay.jpg``, the colours blended onto the image.
        alpha: overlay opacity of the class colours.
        batch_size: images per forward pass.
        labelme: write each mask as a labelme annotation ``<stem>.json`` (see
            :mod:`segkit.prediction.labelme_export`) instead of a PNG, and ``labels.txt``.

    Raises:
        SegkitError: an unreadable input (named), colliding names; nothing is written then.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SegkitError(out_dir, "exists and is not a folder")
    folder_files = [LEGEND_FILE] * color + [LABELS_FILE] * (labelme is not None)
    mask_suffix = MASK_SUFFIX if labelme is None else JSON_SUFFIX
    stems = output_stems(inputs, out_dir, color, overlay_images, mask_suffix, folder_files)
    staging = make_staging_dir(out_dir, prefix=f".{out_dir.name}.partial.")
    summary = PredictionSummary.empty(predictor.classes)
    try:
        results = predictor.iter_predict(inputs, batch_size=batch_size)
        progress = tqdm(zip(inputs, stems, results), total=len(stems), unit="image", disable=None)
        for path, stem, (image, mask) in progress:
            if labelme is None:
                write_mask(staging / (stem + MASK_SUFFIX), mask, palette=predictor.palette)
            else:
                document = labelme_document(mask, predictor.classes, path, out_dir, image=image,
                                            background=predictor.background, options=labelme)
                write_labelme(staging / (stem + JSON_SUFFIX), document)
            if color:
                write_image(staging / (stem + COLOR_SUFFIX), colorize(mask, predictor.palette))
            if overlay_images:
                write_image(staging / (stem + OVERLAY_SUFFIX), overlay(image, mask, alpha, predictor.palette, predictor.background))
            summary.add(mask)
        if color:
            write_image(staging / LEGEND_FILE, legend(predictor.classes, predictor.palette[: len(predictor.classes)]))
        if labelme is not None:
            labels = label_list(predictor.classes)
            atomic_write(staging / LABELS_FILE, lambda temp: temp.write_text(labels, encoding="utf-8"))
        _move_into(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _move_into(staging: Path, out_dir: Path) -> None:
    """Rename the finished folder into place, or its files into an existing folder.

    Several ``torchrun`` ranks may finish at once: whoever loses the race to create
    ``out_dir`` moves its files in instead.
    """
    if not out_dir.exists():
        try:
            staging.rename(out_dir)
            return
        except OSError:
            if not out_dir.is_dir():
                raise
    for item in staging.iterdir():
        os.replace(item, out_dir / item.name)
