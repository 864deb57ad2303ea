"""Predict a list of image files into a folder of masks, all or nothing.

Used by ``segkit predict`` (:func:`predict_files`): inputs are expanded from
files, folders and globs; under ``torchrun`` each process takes its share of
them; masks (and optional colour images and overlays) are written into a
temporary sibling of the output folder and moved into it only when every image
succeeded, so an error never leaves half the outputs behind or touches what the
folder held.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from segkit.data.io import atomic_write, glob_image_files, is_image_file, make_staging_dir, write_image, write_mask
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

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """This process's place among the ``torchrun`` processes.

    Attributes:
        rank: the process's rank.
        world_size: the number of processes.
        local_rank: the rank on this machine (its GPU index).
    """

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environment(cls) -> Shard | None:
        """The shard ``torchrun`` describes in ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; None for a single process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return None
        return cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def take(self, items: Sequence[Any]) -> list[Any]:
        """Every ``world_size``-th item, from this rank's: shares differ in size by at most one."""
        return list(items[self.rank :: self.world_size])

    def device(self, requested: str) -> str:
        """``auto`` becomes this rank's GPU (``cuda:LOCAL_RANK``), or the CPU without CUDA."""
        if requested != "auto":
            return requested
        import torch  # torchrun is PyTorch's launcher: PyTorch is installed

        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"


def predict_files(
    checkpoint: str | Path,
    patterns: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: str = "auto",
    color: bool = False,
    overlay_images: bool = False,
    alpha: float = 0.5,
    labelme: LabelmeOptions | None = None,
    **options: Any,
) -> PredictionSummary:
    """``segkit predict``: expand the inputs, take this process's share under ``torchrun``, predict, write.

    Prediction needs no communication between ``torchrun`` processes, so no process
    group is made: each rank takes every ``world_size``-th input and writes its own
    masks into ``out_dir``. Name clashes are checked over all inputs first, so every
    rank refuses the same runs.

    Args:
        checkpoint: a ``.pt`` checkpoint or an exported ``.onnx`` model.
        patterns: image files, folders and globs (:func:`expand_inputs`).
        out_dir: output folder (see :func:`predict_to_folder`).
        device: ``auto``, ``cpu``, ``cuda:N``, ``mps``.
        color, overlay_images, alpha, labelme: as :func:`predict_to_folder`.
        **options: :class:`~segkit.prediction.predictor.Predictor` options (``tiling``,
            ``tta``, ``crf``, ``threshold``, ``batch_size``).

    Raises:
        SegkitError: bad inputs, checkpoint or options; nothing is written then.
    """
    inputs = expand_inputs(patterns)
    output_stems(inputs, Path(out_dir), color, overlay_images, labelme is not None)
    shard = Shard.from_environment()
    if shard is not None:
        inputs = shard.take(inputs)
        device = shard.device(device)
        logger.info("rank %d of %d: %d images", shard.rank, shard.world_size, len(inputs))
    try:
        predictor = Predictor.from_checkpoint(checkpoint, device=device, **options)
    except SegkitError as error:
        raise SegkitError(error.path or checkpoint, error.problem) from None
    return predict_to_folder(
        predictor, inputs, out_dir, color=color, overlay_images=overlay_images, alpha=alpha, labelme=labelme
    )


def expand_inputs(patterns: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted), globs expanded (sorted; ``**`` recursive).

    Globs are expanded here (:func:`segkit.data.io.glob_image_files`, safe on symbolic-link
    loops) so that quoted patterns work on every shell. A path
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
            images = glob_image_files(pattern)
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
    inputs: Sequence[Path], out_dir: Path, color: bool, overlay_images: bool, labelme: bool = False
) -> list[str]:
    """The output stem of each input, refusing two inputs that would write the same file.

    With ``labelme`` the mask is written as ``<stem>.json`` (and ``labels.txt`` once); with
    ``color`` a ``legend.png`` is written once for the whole folder.

    Raises:
        SegkitError: two inputs share a stem (or one's outputs collide with another's or with
            a folder file), or an output would overwrite an input image.
    """
    folder_files = [LEGEND_FILE] * color + [LABELS_FILE] * labelme
    suffixes = [JSON_SUFFIX if labelme else MASK_SUFFIX] + [COLOR_SUFFIX] * color + [OVERLAY_SUFFIX] * overlay_images
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
        labelme: write each mask as a labelme annotation ``<stem>.json`` (see
            :mod:`segkit.prediction.labelme_export`) instead of a PNG, and ``labels.txt``.

    Raises:
        SegkitError: an unreadable input (named), colliding names; nothing is written then.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SegkitError(out_dir, "exists and is not a folder")
    stems = output_stems(inputs, out_dir, color, overlay_images, labelme is not None)
    staging = make_staging_dir(out_dir, prefix=f".{out_dir.name}.partial.")
    summary = PredictionSummary.empty(predictor.classes)
    try:
        results = predictor.iter_predict(inputs)
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
