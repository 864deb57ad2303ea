"""The few array operations prediction needs, for numpy arrays and torch tensors alike.

Everything around the network -- test-time augmentation, undoing the resize,
tiling, the probabilities -> mask step -- is written once against these
operations; :func:`array_ops` picks numpy's or PyTorch's by the array's type.
So the ONNX Runtime backend computes in numpy without importing PyTorch, and
the PyTorch backend keeps its tensors on the device until the uint8 mask.
Slicing and arithmetic operators are the same in both libraries and are used
directly.

Resizing is bilinear with half-pixel centres (PyTorch's ``align_corners=False``):
OpenCV's ``INTER_LINEAR`` computes exactly that, and Pillow's ``BILINEAR`` filter
on float images is PyTorch's ``antialias=True`` (PyTorch took its antialiased
kernels from Pillow), so both backends resample alike to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image

# Array is a numpy.ndarray or a torch.Tensor.
Array = Any
# OpenCV resizes at most this many interleaved channels at once.
CV2_MAX_CHANNELS = 128


class ArrayOps(Protocol):
    """What :mod:`segkit.prediction` needs from an array library besides slicing and operators."""

    @staticmethod
    def resize(images: Array, size: tuple[int, int], antialias: bool = False) -> Array:
        """``(N, C, H, W)`` float -> ``(N, C, *size)``, bilinear (antialiased when shrinking with ``antialias``)."""

    @staticmethod
    def flip(array: Array, axes: tuple[int, ...]) -> Array: ...

    @staticmethod
    def softmax(array: Array, axis: int) -> Array: ...

    @staticmethod
    def sigmoid(array: Array) -> Array: ...

    @staticmethod
    def concat(arrays: Sequence[Array], axis: int) -> Array: ...

    @staticmethod
    def argmax(array: Array, axis: int) -> Array:
        """Index of the largest value along ``axis`` (the first on ties) as uint8 (at most 256 classes)."""

    @staticmethod
    def uint8(array: Array) -> Array: ...

    @staticmethod
    def zeros(shape: tuple[int, ...], like: Array) -> Array:
        """float32 zeros where ``like`` lives."""

    @staticmethod
    def asarray(values: Any, like: Array) -> Array:
        """``values`` (numpy, or a CPU tensor) as a float32 array where ``like`` lives."""

    @staticmethod
    def to_numpy(array: Array) -> np.ndarray:
        """A host numpy array (contiguous)."""


class NumpyOps:
    """:class:`ArrayOps` for numpy arrays (OpenCV and Pillow resampling)."""

    @staticmethod
    def resize(images: np.ndarray, size: tuple[int, int], antialias: bool = False) -> np.ndarray:
        height, width = size
        if antialias and (height < images.shape[-2] or width < images.shape[-1]):
            return np.stack(
                [
                    np.stack(
                        [
                            np.asarray(Image.fromarray(plane).resize((width, height), Image.Resampling.BILINEAR))
                            for plane in image
                        ]
                    )
                    for image in images
                ]
            )
        out = np.empty((*images.shape[:2], height, width), np.float32)
        for index, image in enumerate(images):
            for start in range(0, image.shape[0], CV2_MAX_CHANNELS):
                planes = image[start : start + CV2_MAX_CHANNELS].transpose(1, 2, 0)  # OpenCV wants (H, W, C)
                resized = cv2.resize(planes, (width, height), interpolation=cv2.INTER_LINEAR)
                out[index, start : start + CV2_MAX_CHANNELS] = resized.reshape(height, width, -1).transpose(2, 0, 1)
        return out

    @staticmethod
    def flip(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        return np.flip(array, axis=axes)

    @staticmethod
    def softmax(array: np.ndarray, axis: int) -> np.ndarray:
        exponentials = np.exp(array - array.max(axis=axis, keepdims=True))
        exponentials /= exponentials.sum(axis=axis, keepdims=True)
        return exponentials

    @staticmethod
    def sigmoid(array: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * array))  # no overflow for large negative logits

    @staticmethod
    def concat(arrays: Sequence[np.ndarray], axis: int) -> np.ndarray:
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def argmax(array: np.ndarray, axis: int) -> np.ndarray:
        # One pass per class with a running maximum: about 1.5x faster than np.argmax
        # over the (non-last) class axis of a C x H x W array, same first-on-ties answer.
        planes = np.moveaxis(array, axis, 0)
        best = planes[0].copy()
        labels = np.zeros(best.shape, np.uint8)
        better = np.empty(best.shape, bool)
        for index in range(1, planes.shape[0]):
            np.greater(planes[index], best, out=better)
            np.putmask(labels, better, index)
            np.maximum(best, planes[index], out=best)
        return labels

    @staticmethod
    def uint8(array: np.ndarray) -> np.ndarray:
        return array.astype(np.uint8)

    @staticmethod
    def zeros(shape: tuple[int, ...], like: np.ndarray) -> np.ndarray:
        return np.zeros(shape, np.float32)

    @staticmethod
    def asarray(values: Any, like: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    @staticmethod
    def to_numpy(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array)


def array_ops(array: Array) -> type[ArrayOps]:
    """The operations for ``array``'s library: numpy's, or PyTorch's for a tensor."""
    if isinstance(array, np.ndarray):
        return NumpyOps
    from segkit.prediction.torch_ops import TorchOps  # a tensor exists, so PyTorch is imported already

    return TorchOps


def scores_from_logits(logits: Array, binary: bool) -> Array:
    """Network output ``(N, 1|C, h, w)`` -> float32 class probabilities ``(N, C, h, w)`` (binary: ``[1 - p, p]``)."""
    ops = array_ops(logits)
    if binary:
        foreground = ops.sigmoid(logits[:, :1])
        return ops.concat([1 - foreground, foreground], axis=1)
    return ops.softmax(logits, axis=1)


def probabilities_to_mask(probabilities: Array, binary: bool, threshold: float) -> Array:
    """The one probabilities -> class step: ``(..., C, H, W)`` -> uint8 ``(..., H, W)`` on the same device.

    Binary models: class 1 where its probability exceeds ``threshold``; otherwise the most probable class.
    """
    ops = array_ops(probabilities)
    if binary:
        return ops.uint8(probabilities[..., 1, :, :] > threshold)
    return ops.argmax(probabilities, axis=-3)
