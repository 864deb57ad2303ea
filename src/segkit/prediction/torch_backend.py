"""The PyTorch backend: a ``torch.nn.Module`` on a device, and PyTorch's array operations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segkit.data.transforms import PreprocessConfig, normalize
from segkit.device import resolve_device
from segkit.prediction.backend import Backend


class TorchOps:
    """:class:`~segkit.prediction.arrays.ArrayOps` for torch tensors, computed where they are."""

    @staticmethod
    def resize(images: torch.Tensor, size: tuple[int, int], antialias: bool = False) -> torch.Tensor:
        shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=antialias and shrinking)

    @staticmethod
    def flip(array: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        return array.flip(axes)

    @staticmethod
    def softmax(array: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.softmax(array.float(), dim=axis)

    @staticmethod
    def sigmoid(array: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(array.float())

    @staticmethod
    def concat(arrays: Sequence[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.cat(list(arrays), dim=axis)

    @staticmethod
    def argmax(array: torch.Tensor, axis: int) -> torch.Tensor:
        return array.max(dim=axis).indices.to(torch.uint8)  # on CPU ~7x faster than argmax over a non-last dim

    @staticmethod
    def uint8(array: torch.Tensor) -> torch.Tensor:
        return array.to(torch.uint8)

    @staticmethod
    def zeros(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float32, device=like.device)

    @staticmethod
    def asarray(values: Any, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32).to(like.device)

    @staticmethod
    def to_numpy(array: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(array.detach().cpu().numpy())


class TorchBackend(Backend):
    """A PyTorch network on a device.

    The model is moved to the device, put in eval mode and, when it has parameters,
    into ``channels_last`` memory format (NHWC convolutions are several times faster
    on CPU; see benchmarks/predict_throughput.py).

    Args:
        model: the network: normalised ``(N, 3, H, W)`` in, logits ``(N, 1|C, H, W)`` out.
        device: ``auto`` (CUDA, MPS, CPU), ``cpu``, ``cuda:1`` ... or a ``torch.device``.
    """

    ops = TorchOps

    def __init__(self, model: nn.Module, device: str | torch.device = "auto") -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.channels_last = any(True for _ in model.parameters())
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def prepare(self, images: np.ndarray, preprocess: PreprocessConfig) -> torch.Tensor:
        batch = torch.from_numpy(images).to(self.device)  # uint8 to the device: 4x less to copy than float32
        normalised = normalize(batch.permute(0, 3, 1, 2), preprocess.mean, preprocess.std)
        if self.channels_last:
            return normalised.contiguous(memory_format=torch.channels_last)
        return normalised

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        with torch.inference_mode():
            yield
