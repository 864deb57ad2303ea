"""The small interface between :class:`~segkit.prediction.predictor.Predictor` and a network.

A backend turns a batch of resized uint8 images into normalised network input
on its device and runs the network on it; the predictor does everything else
(resize policy, test-time augmentation, tiling, undoing the resize, the mask
step) with the backend's :class:`~segkit.prediction.arrays.ArrayOps`. Two exist:
:class:`~segkit.prediction.torch_backend.TorchBackend` (a PyTorch module) and
:class:`~segkit.prediction.onnx_backend.OnnxBackend` (an exported ``.onnx`` file in
ONNX Runtime, numpy arrays, no PyTorch needed).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

from segkit.data.transforms import PreprocessConfig
from segkit.prediction.arrays import Array, ArrayOps


class Backend(ABC):
    """A network on a device, and the array library its inputs and outputs live in.

    Attributes:
        ops: the array operations of that library.
        device: where the network runs (a ``torch.device`` for PyTorch, ``"cpu"`` or
            ``"cuda:N"`` for ONNX Runtime).
        model: the underlying network (a ``torch.nn.Module``, an ONNX Runtime session).
    """

    ops: type[ArrayOps]
    device: Any
    model: Any

    @abstractmethod
    def prepare(self, images: np.ndarray, preprocess: PreprocessConfig) -> Array:
        """``(N, H, W, 3)`` uint8 RGB -> normalised float32 ``(N, 3, H, W)`` network input on the device."""

    @abstractmethod
    def forward(self, images: Array) -> Array:
        """Normalised input -> logits ``(N, 1|C, H, W)``."""

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """The context every prediction runs in (PyTorch: no autograd)."""
        yield
