"""Confusion matrices of index masks: one call, or accumulated batch by batch.

Everything segkit reports about a segmentation (pixel accuracy, IoU, Dice, ...)
is computed from one ``C x C`` matrix of pixel counts, rows = truth and
columns = prediction, so accumulating over a dataset is a sum of matrices and
the result does not depend on how the images were batched.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from segkit.evaluation.metrics import class_iou, compute_metrics

ArrayLike = torch.Tensor | np.ndarray


def _as_index_tensor(values: ArrayLike, name: str) -> torch.Tensor:
    """A torch view of an integer (or bool) mask, numpy arrays without a copy."""
    if isinstance(values, np.ndarray):
        with warnings.catch_warnings():  # read-only arrays (PIL) are only read here
            warnings.simplefilter("ignore", UserWarning)
            values = torch.from_numpy(np.ascontiguousarray(values))
    elif not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(values).__name__}")
    if values.dtype.is_floating_point or values.dtype.is_complex:
        raise TypeError(f"{name} must hold integer class indices, got dtype {values.dtype}")
    return values


def _check_range(values: torch.Tensor, num_classes: int, name: str, ignore_index: int | None) -> None:
    """Raise ValueError naming the distinct values outside ``0..num_classes-1``."""
    low, high = torch.aminmax(values) if values.numel() else (0, 0)
    if low < 0 or high >= num_classes:
        bad = torch.unique(values[(values < 0) | (values >= num_classes)]).tolist()[:10]
        raise ValueError(f"{name} holds values {bad} outside 0..{num_classes - 1} (ignore value {ignore_index})")


def confusion_matrix(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    ignore_index: int | None = 255,
) -> torch.Tensor:
    """Count pixels per (true class, predicted class) pair.

    Args:
        pred: predicted class indices, any shape, torch tensor or numpy array.
        target: true class indices, same shape as ``pred``.
        num_classes: number of classes ``C``; valid indices are ``0..C-1``.
        ignore_index: target value whose pixels are left out (``None``: none).

    Returns:
        ``(C, C)`` int64 tensor on ``pred``'s device; ``cm[t, p]`` counts pixels of
        true class ``t`` predicted as ``p``.

    Raises:
        ValueError: shapes differ, or a target value (other than ``ignore_index``)
            or a prediction at a non-ignored pixel is outside ``0..C-1``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred = _as_index_tensor(pred, "pred")
    target = _as_index_tensor(target, "target").to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    ignored = None if ignore_index is None else target == ignore_index
    if ignored is not None:  # zero ignored pixels rather than compacting: no copy
        target = target.masked_fill(ignored, 0)
        pred = pred.masked_fill(ignored, 0)
    _check_range(target, num_classes, "target", ignore_index)
    _check_range(pred, num_classes, "pred", ignore_index)
    size = num_classes * num_classes
    index = target * num_classes + pred
    if ignored is not None:  # ignored pixels go to one extra bin, dropped below
        index.masked_fill_(ignored, size)
    counts = torch.bincount(index, minlength=size + 1)[:size]
    return counts.reshape(num_classes, num_classes)


def compute_iou(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    ignore_index: int | None = 255,
) -> torch.Tensor:
    """Per-class IoU of one prediction, float64, NaN for classes absent from both."""
    return class_iou(confusion_matrix(pred, target, num_classes, ignore_index))


class ConfusionMatrix:
    """Accumulate a confusion matrix over batches, then compute every metric once.

    Args:
        num_classes: number of classes ``C``.
        ignore_index: target value left out of every count (``None``: none).
        device: where the matrix lives (default CPU); each batch is counted on
            its own device and only the ``C x C`` result is moved.
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
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.num_images = 0

    @property
    def matrix(self) -> torch.Tensor:
        """The accumulated ``(C, C)`` int64 matrix (rows truth, columns prediction)."""
        return self._matrix

    def update(self, pred: ArrayLike, target: ArrayLike, num_images: int | None = None) -> None:
        """Add one image or a batch; a 3-D ``pred`` counts as a batch of ``pred.shape[0]``."""
        counts = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self._matrix += counts.to(self._matrix.device)
        if num_images is None:
            num_images = pred.shape[0] if pred.ndim == 3 else 1
        self.num_images += int(num_images)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._matrix.zero_()
        self.num_images = 0

    def all_reduce(self) -> None:
        """Sum the matrix and image count over all ranks of ``torch.distributed``.

        A no-op when torch.distributed is not initialised. Call it once, after
        the last ``update`` on every rank, and before ``compute``.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = self._matrix.device
        if dist.get_backend() == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        image_count = torch.tensor([self.num_images], dtype=torch.int64, device=device)
        packed = torch.cat([self._matrix.reshape(-1).to(device), image_count])
        dist.all_reduce(packed)  # one collective for matrix and count
        self._matrix.copy_(packed[:-1].reshape(self.num_classes, self.num_classes))
        self.num_images = int(packed[-1].item())

    def compute(self) -> dict[str, Any]:
        """Every metric of :func:`segkit.evaluation.metrics.compute_metrics`."""
        return compute_metrics(self._matrix, self.class_names, self.num_images)
