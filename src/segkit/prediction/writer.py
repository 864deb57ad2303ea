"""Predict a list of image files into a folder of masks, all or nothing.

:func:`predict` is ``segkit predict`` and :func:`segkit.predict`: inputs are expanded
from files, folders and globs; under ``torchrun`` each process takes its share of
them (:func:`predict_files`); masks (and optional colour images and overlays) are
written into a temporary sibling of the output folder and moved into it only when
every image succeeded, so an error never leaves half the outputs behind or touches
what the folder held. Without an output folder the masks are returned instead.
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

from segkit.data.io import glob_image_files, is_image_file, peek_image, write_image, write_mask
from segkit.data.labelme import LABELS_FILE
from segkit.errors import OptionError, SegkitError
from segkit.files import atomic_write, make_staging_dir
from segkit.prediction.labelme_export import (
    JSON_SUFFIX,
    LabelmeOptions,
    label_list,
    labelme_document,
    write_labelme,
)
from segkit.prediction.options import DEFAULT_ALPHA, OutputOptions, PredictionOptions
from segkit.prediction.predictor import Predictor, load_predictor
from segkit.prediction.regions import Regions
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


def predict(
    model: str | Path,
    inputs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    color: bool = False,
    overlay: bool = False,
    alpha: float = DEFAULT_ALPHA,
    format: str = "png",
    image_data: bool = False,
    polygon_tolerance: float = OutputOptions.polygon_tolerance,
    min_area: int = OutputOptions.min_area,
    roi_masks: str | Path | None = None,
    **prediction: Any,
) -> PredictionSummary | dict[Path, np.ndarray]:
    """Masks for image files, folders or globs at each image's size: ``segkit predict``.

    Args:
        model: a ``.pt`` checkpoint, an exported ``.onnx`` model or a ``--format hf`` folder.
        inputs: an image file, folder (its images, sorted) or glob (``"photos/**/*.jpg"``), or a
            list of them; an image reached twice is predicted once.
        out: output folder: ``<stem>.png`` palette PNGs of class indices; created if missing,
            other files in it are kept, and outputs appear only when every image succeeded.
            ``None``: nothing is written and the masks are returned.
        color: also write ``<stem>_color.png`` (class colours) and ``legend.png``.
        overlay: also write ``<stem>_overlay.jpg`` (class colours over the image).
        alpha: opacity of the overlay colours, in ``[0, 1]``.
        format: ``"png"`` masks, or ``"labelme"``: ``<stem>.json`` labelme annotations (one
            polygon per region and class, mask shapes for regions with holes) and ``labels.txt``
            (``out`` may be the images' folder).
        image_data: with ``format="labelme"``: embed the image in the JSON (``imageData``).
        polygon_tolerance: with ``format="labelme"``: largest distance in pixels of a
            simplified polygon from the region's outline.
        min_area: with ``format="labelme"``: regions of fewer pixels are left out.
        roi_masks: region-of-interest masks of the inputs: a folder (``<stem>.*``) or a pattern
            with ``{id}`` (the input's stem, ``mask/{id}_mask.gif``); pixels outside become the
            background class (the ignore value when class 0 is not a background).
        **prediction: how the model predicts, as :class:`~segkit.prediction.options.PredictionOptions`:
            ``batch_size=8``, ``device="auto"``, ``threshold=None``, ``tile="auto"``,
            ``overlap=0.25``, ``tta="none"``, ``crf=False``.

    Returns:
        With ``out``: a :class:`PredictionSummary` (predicted pixels and images per class;
        under ``torchrun``, of this process's share). Without: ``{image path: (H, W) uint8
        mask}`` in input order (every input, in every process).

    Raises:
        OptionError: an option out of range or without its companion (the command line
            shows these with its usage).
        SegkitError: a missing input, an unreadable model, or outputs that would collide or
            overwrite an input (nothing is written then); unreadable images, all named in one
            line after the masks of the others were written (with ``out``).

    Example:
        >>> import segkit
        >>> masks = segkit.predict("runs/exp/best.pt", "photos/")  # {Path: (H, W) uint8 mask}
        >>> summary = segkit.predict("runs/exp/best.pt", ["a.jpg", "more/*.png"], out="masks/", overlay=True, tta="flip")
        >>> print(summary.format())
    """
    OutputOptions(  # their checks, before any model is read
        color=color,
        overlay=overlay,
        alpha=alpha,
        format=format,
        image_data=image_data,
        polygon_tolerance=polygon_tolerance,
        min_area=min_area,
        roi_masks=roi_masks,
    )
    labelme = (
        LabelmeOptions(tolerance=polygon_tolerance, min_area=min_area, image_data=image_data)
        if format == "labelme"
        else None
    )
    options = PredictionOptions(**prediction).predictor_kwargs()
    patterns = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if out is not None:
        return predict_files(
            model,
            patterns,
            out,
            color=color,
            overlay_images=overlay,
            alpha=alpha,
            labelme=labelme,
            roi_masks=roi_masks,
            **options,
        )
    if color or overlay or labelme is not None:
        raise OptionError("color, overlay and format='labelme' write files: give out=FOLDER")
    paths = expand_inputs(patterns)
    predictor = load_predictor(model, **options)
    regions = regions_of(predictor, roi_masks, paths)
    masks = predictor.predict_batch(paths)
    return {path: regions.apply(path, mask) if regions else mask for path, mask in zip(paths, masks)}


def regions_of(predictor: Predictor, roi_masks: str | Path | None, inputs: Sequence[Path]) -> Regions | None:
    """The inputs' regions of interest (checked: every input has one), or None; says when the model wants them."""
    trained_with = (getattr(predictor.card.training, "config", None) or {}).get("roi_masks")
    if roi_masks is None:
        if trained_with:
            logger.info(
                "the model was trained inside regions of interest (%s); --roi-masks blacks out the rest", trained_with
            )
        return None
    fill = predictor.background if predictor.background is not None else predictor.ignore_index
    regions = Regions(roi_masks, fill)
    regions.check(inputs)
    return regions


def predict_files(
    checkpoint: str | Path,
    patterns: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: str = "auto",
    color: bool = False,
    overlay_images: bool = False,
    alpha: float = DEFAULT_ALPHA,
    labelme: LabelmeOptions | None = None,
    roi_masks: str | Path | None = None,
    **options: Any,
) -> PredictionSummary:
    """Expand the inputs, take this process's share under ``torchrun``, predict, write (see :func:`predict`).

    Prediction needs no communication between ``torchrun`` processes, so no process
    group is made: each rank takes every ``world_size``-th input and writes its own
    masks into ``out_dir``. Name clashes are checked over all inputs first, so every
    rank refuses the same runs.

    Args:
        checkpoint: a ``.pt`` checkpoint or an exported ``.onnx`` model.
        patterns: image files, folders and globs (:func:`expand_inputs`).
        out_dir: output folder (see :func:`predict_to_folder`).
        device: ``auto``, ``cpu``, ``cuda:N``, ``mps``.
        color, overlay_images, alpha, labelme, roi_masks: as :func:`predict_to_folder` and :func:`predict`.
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
    predictor = load_predictor(checkpoint, device, **options)
    return predict_to_folder(
        predictor,
        inputs,
        out_dir,
        color=color,
        overlay_images=overlay_images,
        alpha=alpha,
        labelme=labelme,
        regions=regions_of(predictor, roi_masks, inputs),
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
    alpha: float = DEFAULT_ALPHA,
    labelme: LabelmeOptions | None = None,
    regions: Regions | None = None,
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
        regions: the inputs' regions of interest: pixels outside are blacked out.

    Raises:
        SegkitError: colliding names (nothing is written then); or unreadable inputs, all named
            in one line after the masks of the readable ones were written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SegkitError(out_dir, "exists and is not a folder")
    stems = output_stems(inputs, out_dir, color, overlay_images, labelme is not None)
    unreadable = unreadable_images(inputs)  # one pass over the headers: every bad file is said at once
    if unreadable and len(unreadable) == len(inputs):
        raise _unreadable_error(unreadable, 0, out_dir)
    bad = {str(error.path) for error in unreadable}
    stems = [stem for path, stem in zip(inputs, stems) if str(path) not in bad]
    inputs = [path for path in inputs if str(path) not in bad]
    staging = make_staging_dir(out_dir, prefix=f".{out_dir.name}.partial.")
    summary = PredictionSummary.empty(predictor.classes)
    try:
        results = predictor.iter_predict(inputs)
        progress = tqdm(zip(inputs, stems, results), total=len(stems), unit="image", disable=None)
        for path, stem, (image, mask) in progress:
            if regions is not None:
                mask = regions.apply(path, mask)
            if labelme is None:
                write_mask(staging / (stem + MASK_SUFFIX), mask, palette=predictor.palette)
            else:
                document = labelme_document(
                    mask,
                    predictor.classes,
                    path,
                    out_dir,
                    image=image,
                    background=predictor.background,
                    options=labelme,
                )
                write_labelme(staging / (stem + JSON_SUFFIX), document)
            if color:
                write_image(staging / (stem + COLOR_SUFFIX), colorize(mask, predictor.palette))
            if overlay_images:
                write_image(
                    staging / (stem + OVERLAY_SUFFIX),
                    overlay(image, mask, alpha, predictor.palette, predictor.background),
                )
            summary.add(mask)
        if color:
            write_image(staging / LEGEND_FILE, legend(predictor.classes, predictor.palette[: len(predictor.classes)]))
        if labelme is not None:
            labels = label_list(predictor.classes)
            atomic_write(staging / LABELS_FILE, lambda temp: temp.write_text(labels, encoding="utf-8"))
        _move_into(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if unreadable:
        raise _unreadable_error(unreadable, len(inputs), out_dir)
    return summary


def unreadable_images(inputs: Sequence[Path]) -> list[SegkitError]:
    """The inputs that are not readable images, from their headers (nothing decoded)."""
    problems = []
    for path in inputs:
        try:
            peek_image(path)
        except SegkitError as error:
            problems.append(error)
    return problems


def _unreadable_error(unreadable: list[SegkitError], written: int, out_dir: Path) -> SegkitError:
    """One line: the first unreadable input, how many more, and what was written."""
    first, rest = unreadable[0], unreadable[1:]
    more = (
        f"; {len(rest)} more: "
        + ", ".join(Path(str(e.path)).name for e in rest[:5])
        + (" ..." if len(rest) > 5 else "")
        if rest
        else ""
    )
    done = f"; the masks of the other {written} images are in {out_dir}" if written else "; nothing was written"
    return SegkitError(first.path, f"{first.problem}{more}{done}")


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
