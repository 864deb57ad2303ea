"""Evaluate a folder of predicted masks against a folder of true masks.

Masks are paired by file stem (``pred/<stem>.png`` with ``true/<stem>.*``).
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

from segkit.data.colors import load_color_table
from segkit.data.io import is_image_file, read_mask_file
from segkit.errors import SegkitError
from segkit.evaluation.confusion import joint_histogram
from segkit.evaluation.metrics import compute_metrics
from segkit.evaluation.per_image import ImageCallback, ImagePixels, ImageResult

logger = logging.getLogger(__name__)

IGNORE_LABEL = "__ignore__"  # labelme's labels.txt line for the ignore value, not a class
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


def read_class_names(path: str | Path, ignore_index: int | None = 255) -> list[str]:
    """Class names in index order from a file.

    A ``.json`` or ``.csv`` file is read as a colour table
    (:func:`segkit.data.colors.load_color_table`, e.g. a dataset's ``classes.json``);
    any other file holds one name per line, blank and ``__ignore__`` lines skipped.
    """
    path = Path(path)
    if path.suffix.lower() in (".json", ".csv"):
        table = load_color_table(path)
        return table.class_names() if ignore_index is None else table.class_names(ignore_index)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise SegkitError(path, "class names file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SegkitError(path, f"cannot read class names ({error})") from None
    names = [line.strip() for line in lines if line.strip() and line.strip() != IGNORE_LABEL]
    if not names:
        raise SegkitError(path, "no class names (expected one name per line)")
    if len(set(names)) != len(names):
        raise SegkitError(path, "class names are not unique")
    return names


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise SegkitError(folder, "not a folder")
    masks: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_image_file(path):
            continue
        if path.is_symlink() and not path.exists():  # never skip a mask silently
            raise SegkitError(path, "broken symbolic link (missing target or a link loop)")
        if not path.is_file():
            continue
        if path.stem in masks:
            raise SegkitError(folder, f"two masks named {path.stem!r}: {masks[path.stem].name} and {path.name}")
        masks[path.stem] = path
    return masks


def pair_masks(pred_dir: str | Path, true_dir: str | Path) -> list[MaskPair]:
    """Pair every true mask with the prediction of the same stem, sorted by stem.

    Raises:
        SegkitError: a folder is missing or empty, or a true mask has no prediction.
    """
    predictions = _masks_by_stem(Path(pred_dir))
    truths = _masks_by_stem(Path(true_dir))
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

    A side is binary 0/255 when all its values are in {0, 255}, 255 occurs, and the
    other side is 0/1 or 0/255 too (and no class count other than 2 was given).
    """
    true_lookup = np.arange(_VALUES)
    pred_lookup = np.arange(_VALUES)
    if num_classes not in (None, 2):
        return true_lookup, pred_lookup
    zero_one, zero_255 = {0, 1}, {0, 255}
    true_binary = true_values <= zero_one or true_values <= zero_255
    pred_binary = pred_values <= zero_one or pred_values <= zero_255
    binary_true = 255 in true_values and true_values <= zero_255 and pred_binary
    binary_pred = 255 in pred_values and pred_values <= zero_255 and true_binary
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
    """Class names (read from a file when a path is given) and the class count they imply."""
    if class_names is None:
        return None, num_classes
    source = None
    if isinstance(class_names, (str, Path)):
        source = class_names
        names = read_class_names(class_names, ignore_index)
    else:
        names = [str(name) for name in class_names]
    if num_classes is not None and num_classes != len(names):
        raise SegkitError(source, f"{len(names)} class names for num_classes={num_classes}")
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
        class_names: names in class order, or a file (see :func:`read_class_names`);
            sets the number of classes.
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
