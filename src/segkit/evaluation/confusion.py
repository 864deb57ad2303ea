"""Confusion matrices of index masks: one call, or accumulated batch by batch.

Everything segkit reports about a segmentation (pixel accuracy, IoU, Dice, ...)
is computed from one ``C x C`` matrix of pixel counts, rows = truth and
columns = prediction, so accumulating over a dataset is a sum of matrices and
the result does not depend on how the images were batched.

numpy masks are counted on the CPU without PyTorch: uint8 masks (what every
mask file holds) through one ``np.bincount`` over the 65,536 joint values
``truth * 256 + prediction`` (:func:`joint_histogram`), from which the matrix
and the range checks are read; torch tensors are counted where they are (the GPU
in training), and only the ``C x C`` result moves.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from segkit.evaluation.metrics import class_iou, compute_metrics

if TYPE_CHECKING:
    import torch

ArrayLike = Any  # numpy.ndarray or torch.Tensor
MASK_VALUES = 256  # uint8 masks


def _is_tensor(values: Any) -> bool:
    return type(values).__module__.startswith("torch")


def _check_integers(values: ArrayLike, name: str) -> None:
    if not isinstance(values, np.ndarray) and not _is_tensor(values):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(values).__name__}")
    kind = values.dtype.kind if isinstance(values, np.ndarray) else ("f" if values.dtype.is_floating_point else "i")
    if kind not in "biu" or (not isinstance(values, np.ndarray) and values.dtype.is_complex):
        raise TypeError(f"{name} must hold integer class indices, got dtype {values.dtype}")


def _range_error(name: str, bad: Sequence[int], num_classes: int, ignore_index: int | None) -> ValueError:
    return ValueError(
        f"{name} holds values {list(bad)[:10]} outside 0..{num_classes - 1} (ignore value {ignore_index})"
    )


def joint_histogram(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(256, 256)`` int64 pixel counts of every (true value, predicted value) pair of two uint8 (or bool) masks.

    One pass of ``np.bincount`` over ``truth * 256 + prediction`` in a 2-byte buffer;
    the histograms of several images add up.
    """
    index = np.ascontiguousarray(target).view(np.uint8).astype(np.uint16)
    index <<= 8
    index |= np.ascontiguousarray(pred).view(np.uint8)
    return np.bincount(index.reshape(-1), minlength=MASK_VALUES * MASK_VALUES).reshape(MASK_VALUES, MASK_VALUES)


def matrix_from_joint(joint: np.ndarray, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """The ``(C, C)`` confusion matrix in a joint histogram, after checking every counted value.

    Raises:
        ValueError: a true value (other than ``ignore_index``) or a prediction at a
            non-ignored pixel outside ``0..C-1``.
    """
    labelled = np.ones(joint.shape[0], bool)
    if ignore_index is not None and 0 <= ignore_index < joint.shape[0]:
        labelled[ignore_index] = False
    rows = joint[labelled]
    row_values = np.flatnonzero(labelled)
    bad_true = row_values[(row_values >= num_classes) & (rows.sum(axis=1) > 0)]
    if bad_true.size:
        raise _range_error("target", bad_true.tolist(), num_classes, ignore_index)
    bad_pred = np.flatnonzero(rows[:, num_classes:].sum(axis=0)) + num_classes
    if bad_pred.size:
        raise _range_error("pred", bad_pred.tolist(), num_classes, ignore_index)
    matrix = joint[:num_classes, :num_classes].astype(np.int64)
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        matrix[ignore_index] = 0
    return matrix


def _numpy_confusion(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    small = (np.uint8, np.bool_)
    if pred.dtype.type in small and target.dtype.type in small and num_classes <= MASK_VALUES:
        return matrix_from_joint(joint_histogram(pred, target), num_classes, ignore_index)
    pred, target = pred.reshape(-1).astype(np.int64), target.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        labelled = target != ignore_index
        pred, target = pred[labelled], target[labelled]
    for name, values in (("target", target), ("pred", pred)):
        outside = (values < 0) | (values >= num_classes)
        if outside.any():
            raise _range_error(name, np.unique(values[outside]).tolist(), num_classes, ignore_index)
    return np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, -1)


def _torch_confusion(pred: Any, target: Any, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    import torch

    def as_tensor(values: Any) -> torch.Tensor:
        if isinstance(values, np.ndarray):
            with warnings.catch_warnings():  # read-only arrays (PIL) are only read here
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(np.ascontiguousarray(values))
        return values

    pred = as_tensor(pred)
    target = as_tensor(target).to(pred.device)
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    ignored = None if ignore_index is None else target == ignore_index
    if ignored is not None:  # zero ignored pixels rather than compacting: no copy
        target = target.masked_fill(ignored, 0)
        pred = pred.masked_fill(ignored, 0)
    for name, values in (("target", target), ("pred", pred)):
        low, high = torch.aminmax(values) if values.numel() else (0, 0)
        if low < 0 or high >= num_classes:
            bad = torch.unique(values[(values < 0) | (values >= num_classes)]).tolist()
            raise _range_error(name, bad, num_classes, ignore_index)
    size = num_classes * num_classes
    index = target * num_classes + pred
    if ignored is not None:  # ignored pixels go to one extra bin, dropped below
        index.masked_fill_(ignored, size)
    return torch.bincount(index, minlength=size + 1)[:size].reshape(num_classes, num_classes)


def confusion_matrix(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    ignore_index: int | None = 255,
) -> ArrayLike:
    """Count pixels per (true class, predicted class) pair.

    Args:
        pred: predicted class indices, any shape, numpy array or torch tensor.
        target: true class indices, same shape as ``pred``.
        num_classes: number of classes ``C``; valid indices are ``0..C-1``.
        ignore_index: target value whose pixels are left out (``None``: none).

    Returns:
        ``(C, C)`` int64 counts, ``cm[t, p]`` = pixels of true class ``t`` predicted as
        ``p``: a numpy array for numpy inputs, else a tensor on ``pred``'s device.

    Raises:
        ValueError: shapes differ, or a target value (other than ``ignore_index``)
            or a prediction at a non-ignored pixel is outside ``0..C-1``.
        TypeError: not arrays of integers.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    _check_integers(pred, "pred")
    _check_integers(target, "target")
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if isinstance(pred, np.ndarray) and isinstance(target, np.ndarray):
        return _numpy_confusion(pred, target, num_classes, ignore_index)
    return _torch_confusion(pred, target, num_classes, ignore_index)


def compute_iou(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Per-class IoU of one prediction, float64, NaN for classes absent from both."""
    return class_iou(confusion_matrix(pred, target, num_classes, ignore_index))


class ConfusionMatrix:
    """Accumulate a confusion matrix over batches, then compute every metric once.

    Args:
        num_classes: number of classes ``C``.
        ignore_index: target value left out of every count (``None``: none).
        device: ``None`` (default): the matrix is a numpy array and batches of any
            kind are counted on their own device; a torch device (``"cuda"``): the
            matrix is a tensor there (for :meth:`all_reduce` over NCCL).
        class_names: names used as keys of ``compute()["per_class"]``.

    Example:
        >>> cm = ConfusionMatrix(num_classes=3)
        >>> for images, masks in loader:
        ...     cm.update(model(images).argmax(1), masks)
        >>> cm.all_reduce()  # sums over DDP ranks; no-op without torch.distributed
        >>> metrics = cm.compute()
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        device: str | torch.device | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = None if class_names is None else list(class_names)
        self._matrix: ArrayLike
        if device is None:
            self._matrix = np.zeros((num_classes, num_classes), np.int64)
        else:
            import torch

            self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.num_images = 0

    @property
    def matrix(self) -> ArrayLike:
        """The accumulated ``(C, C)`` int64 matrix (rows truth, columns prediction)."""
        return self._matrix

    def update(self, pred: ArrayLike, target: ArrayLike, num_images: int | None = None) -> None:
        """Add one image or a batch; a 3-D ``pred`` counts as a batch of ``pred.shape[0]``."""
        counts = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if isinstance(self._matrix, np.ndarray):
            self._matrix += counts if isinstance(counts, np.ndarray) else counts.cpu().numpy()
        else:
            import torch

            self._matrix += torch.as_tensor(counts).to(self._matrix.device)
        if num_images is None:
            num_images = pred.shape[0] if pred.ndim == 3 else 1
        self.num_images += int(num_images)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._matrix[...] = 0
        self.num_images = 0

    def all_reduce(self) -> None:
        """Sum the matrix and image count over all ranks of ``torch.distributed``.

        A no-op when torch.distributed is not initialised (or PyTorch not installed).
        Call it once, after the last ``update`` on every rank, and before ``compute``.
        """
        try:
            import torch
            import torch.distributed as dist
        except ImportError:
            return
        if not (dist.is_available() and dist.is_initialized()):
            return
        on_host = isinstance(self._matrix, np.ndarray)
        device = torch.device("cpu") if on_host else self._matrix.device
        if dist.get_backend() == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        image_count = torch.tensor([self.num_images], dtype=torch.int64, device=device)
        packed = torch.cat([torch.as_tensor(self._matrix).reshape(-1).to(device), image_count])
        dist.all_reduce(packed)  # one collective for matrix and count
        reduced = packed[:-1].reshape(self.num_classes, self.num_classes)
        if on_host:
            self._matrix[...] = reduced.cpu().numpy()
        else:
            self._matrix.copy_(reduced)
        self.num_images = int(packed[-1].item())

    def compute(self) -> dict[str, Any]:
        """Every metric of :func:`segkit.evaluation.metrics.compute_metrics`."""
        return compute_metrics(self._matrix, self.class_names, self.num_images)
