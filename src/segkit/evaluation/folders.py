"""Evaluate a folder of predicted masks against a folder of true masks.

Masks are paired by file stem (``pred/<stem>.png`` with ``true/<stem>.*``,
:func:`segkit.data.io.index_image_files`), class lists read by
:func:`segkit.data.classes.read_class_list`, and 0/255 masks recognised by
:func:`segkit.data.masks.is_binary_0_255`, as everywhere in segkit.
Each pair is decoded in a thread pool (PIL releases the GIL while decoding)
and summarised by a 256 x 256 histogram of raw (truth value, predicted value)
pairs (:func:`segkit.evaluation.confusion.joint_histogram`), kept sparse. Whether the masks are binary
0/255 and how many classes there are is only decided once every file has been
seen, so every file is read exactly once and never held in memory.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.classes import read_class_list
from segkit.data.io import index_image_files, read_mask_file
from segkit.data.masks import is_binary_0_255
from segkit.errors import SegkitError
from segkit.evaluation.confusion import joint_histogram
from segkit.evaluation.metrics import compute_metrics
from segkit.evaluation.per_image import ImageCallback, ImagePixels, ImageResult

logger = logging.getLogger(__name__)

_VALUES = 256  # masks hold uint8 values


@dataclass(frozen=True)
class MaskPair:
    """A predicted mask file and the true mask file with the same stem."""

    pred: Path
    true: Path


@dataclass(frozen=True)
class _PairCounts:
    """Sparse joint histogram of one pair: ``index = truth * 256 + pred`` -> pixels."""

    pair: MaskPair
    index: np.ndarray
    counts: np.ndarray


def pair_masks(pred_dir: str | Path, true_dir: str | Path) -> list[MaskPair]:
    """Pair every true mask with the prediction of the same stem, sorted by stem.

    Raises:
        SegkitError: a folder is missing or empty, or a true mask has no prediction.
    """
    predictions = index_image_files(pred_dir, recursive=False)
    truths = index_image_files(true_dir, recursive=False)
    if not truths:
        raise SegkitError(true_dir, "no mask files")
    missing = [path for stem, path in truths.items() if stem not in predictions]
    if missing:
        more = f" (and {len(missing) - 1} more true masks)" if len(missing) > 1 else ""
        raise SegkitError(missing[0], f"no prediction {missing[0].stem}.* in {pred_dir}{more}")
    extra = len(predictions) - len(truths)
    if extra:
        logger.warning("%d predictions in %s have no true mask and are skipped", extra, pred_dir)
    return [MaskPair(predictions[stem], path) for stem, path in truths.items()]


def _read_index_mask(path: Path) -> np.ndarray:
    """A single-channel uint8 mask; grey RGB (equal channels) is accepted."""
    array, mode = read_mask_file(path)
    if array.ndim == 3:
        if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise SegkitError(path, f"colour {mode} mask: expected class indices (L or P PNG)")
        array = array[..., 0]
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() >= _VALUES):
            raise SegkitError(path, f"values outside 0..255 in a {mode} mask: expected class indices")
        array = array.astype(np.uint8)
    return array


def _count_pair(pair: MaskPair) -> _PairCounts:
    pred = _read_index_mask(pair.pred)
    true = _read_index_mask(pair.true)
    if pred.shape != true.shape:
        pred_size, true_size = f"{pred.shape[1]}x{pred.shape[0]}", f"{true.shape[1]}x{true.shape[0]}"
        raise SegkitError(pair.pred, f"size {pred_size} differs from {pair.true} ({true_size})")
    joint = joint_histogram(pred, true).reshape(-1)
    nonzero = np.flatnonzero(joint)
    return _PairCounts(pair, nonzero, joint[nonzero])


def _binary_lookups(
    true_values: set[int], pred_values: set[int], num_classes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Value lookups for truth and prediction: 255 -> 1 on a side stored as binary 0/255.

    A side is binary 0/255 by :func:`segkit.data.masks.is_binary_0_255` (which yields to a
    class count other than 2) when the other side holds two values too (0/1 or 0/255).
    """
    true_lookup = np.arange(_VALUES)
    pred_lookup = np.arange(_VALUES)
    two_values = ({0, 1}, {0, 255})
    true_two = any(true_values <= values for values in two_values)
    pred_two = any(pred_values <= values for values in two_values)
    binary_true = is_binary_0_255(true_values, num_classes) and pred_two
    binary_pred = is_binary_0_255(pred_values, num_classes) and true_two
    if binary_true:
        true_lookup[255] = 1
    if binary_pred:
        pred_lookup[255] = 1
    if binary_true or binary_pred:
        sides = " and ".join(side for side, flag in (("true", binary_true), ("predicted", binary_pred)) if flag)
        logger.info("binary masks: %s masks hold 0/255, reading 255 as class 1 (not as ignore)", sides)
    return true_lookup, pred_lookup


def _resolve_names(
    class_names: Sequence[str] | str | Path | None, num_classes: int | None, ignore_index: int | None
) -> tuple[list[str] | None, int | None]:
    """Class names (:func:`segkit.data.classes.read_class_list`) and the class count they imply."""
    if class_names is None:
        return None, num_classes
    classes = read_class_list(class_names, ignore_index=255 if ignore_index is None else ignore_index)
    names = classes.names
    if num_classes is not None and num_classes != len(names):
        raise SegkitError(classes.path, f"{len(names)} class names for num_classes={num_classes}")
    return names, len(names)


def _check_values(
    counts: _PairCounts,
    true_lookup: np.ndarray,
    pred_lookup: np.ndarray,
    num_classes: int,
    ignore_index: int | None,
) -> None:
    """Raise a SegkitError naming the file when a value is not a class (nor ignore in truth)."""
    true = true_lookup[counts.index >> 8]
    pred = pred_lookup[counts.index & 0xFF]
    labelled = true != ignore_index
    bad_true = np.unique(true[labelled & (true >= num_classes)])
    if bad_true.size:
        raise SegkitError(
            counts.pair.true,
            f"values {bad_true.tolist()} are neither classes 0..{num_classes - 1} nor the ignore value {ignore_index}",
        )
    bad_pred = np.unique(pred[labelled & (pred >= num_classes)])
    if bad_pred.size:
        raise SegkitError(
            counts.pair.pred,
            f"predicted values {bad_pred.tolist()} at labelled pixels are not classes 0..{num_classes - 1}",
        )


def _count_all(pairs: list[MaskPair], workers: int) -> list[_PairCounts]:
    executor = ThreadPoolExecutor(max_workers=workers)
    try:
        return list(executor.map(_count_pair, pairs))
    finally:  # after the first failure, stop instead of decoding the rest
        executor.shutdown(wait=True, cancel_futures=True)


def evaluate_folders(
    pred_dir: str | Path,
    true_dir: str | Path,
    *,
    class_names: Sequence[str] | str | Path | None = None,
    ignore_index: int | None = 255,
    num_classes: int | None = None,
    workers: int | None = None,
    on_image: ImageCallback | None = None,
) -> dict[str, Any]:
    """Metrics of every predicted mask against the true mask with the same stem.

    Args:
        pred_dir: folder of predicted index masks (PNG, L or P mode).
        true_dir: folder of true index masks, any image extension.
        class_names: names in class order, ``"a,b,c"``, or a class file (a list, or a
            JSON/CSV colour table such as a dataset's ``classes.json``); sets the number of classes.
        ignore_index: true value left out of every count (``None``: none).
        num_classes: number of classes when no names are given; default: the
            largest value seen (outside ``ignore_index``) + 1.
        workers: decoding threads (default: CPU count, at most 8).
        on_image: called with each pair's :class:`~segkit.evaluation.per_image.ImageResult`
            (named by the true mask's stem) once the classes are known; its pixels are
            read again only when asked for.

    Binary masks stored as {0, 255} are read as {0, 1} (255 is then class 1,
    not ignore) when every true mask is 0/255 and the predictions are all 0/1
    or all 0/255 (and likewise 0/255 predictions with 0/1 truth); this is logged.

    Returns:
        The dict of :func:`segkit.evaluation.metrics.compute_metrics`.

    Raises:
        SegkitError: naming the file for a missing prediction, a size mismatch,
            an unreadable mask, or a value that is not a class.
    """
    names, num_classes = _resolve_names(class_names, num_classes, ignore_index)
    pairs = pair_masks(pred_dir, true_dir)
    results = _count_all(pairs, workers or min(8, os.cpu_count() or 1))
    joint = np.zeros(_VALUES * _VALUES, dtype=np.int64)
    for result in results:
        joint[result.index] += result.counts
    index = np.flatnonzero(joint)
    true_lookup, pred_lookup = _binary_lookups(
        {int(value) for value in np.unique(index >> 8)}, {int(value) for value in np.unique(index & 0xFF)}, num_classes
    )
    true = true_lookup[index >> 8]
    pred = pred_lookup[index & 0xFF]
    labelled = true != ignore_index
    if not labelled.any():
        raise SegkitError(true_dir, f"every true pixel is the ignore value {ignore_index}: nothing to evaluate")
    if num_classes is None:  # the ignore value is no class, in truth or prediction
        num_classes = int(max(true[labelled].max(), pred[labelled & (pred != ignore_index)].max(initial=0))) + 1
    for result in results:
        _check_values(result, true_lookup, pred_lookup, num_classes, ignore_index)
    if on_image is not None:
        for result in results:
            matrix = _matrix(result.index, result.counts, true_lookup, pred_lookup, num_classes, ignore_index)
            pixels = functools.partial(_pixels, result.pair, true_lookup, pred_lookup)
            on_image(ImageResult(result.pair.true.stem, matrix, pixels))
    matrix = _matrix(index, joint[index], true_lookup, pred_lookup, num_classes, ignore_index)
    return compute_metrics(matrix, names, len(pairs))


def _matrix(
    index: np.ndarray,
    counts: np.ndarray,
    true_lookup: np.ndarray,
    pred_lookup: np.ndarray,
    num_classes: int,
    ignore_index: int | None,
) -> np.ndarray:
    """The ``(C, C)`` confusion matrix of a sparse joint histogram (``index = truth * 256 + pred``)."""
    true = true_lookup[index >> 8]
    pred = pred_lookup[index & 0xFF]
    labelled = true != ignore_index
    matrix = np.zeros(num_classes * num_classes, dtype=np.int64)
    np.add.at(matrix, true[labelled] * num_classes + pred[labelled], counts[labelled])
    return matrix.reshape(num_classes, num_classes)


def _pixels(pair: MaskPair, true_lookup: np.ndarray, pred_lookup: np.ndarray) -> ImagePixels:
    """A pair's masks read again, with the same value mapping as the evaluation (no image)."""
    truth = true_lookup[_read_index_mask(pair.true)].astype(np.uint8)
    return ImagePixels(None, truth, pred_lookup[_read_index_mask(pair.pred)].astype(np.uint8))
