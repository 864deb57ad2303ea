"""The PyTorch backend: a ``torch.nn.Module`` on a device, and PyTorch's array operations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from segkit.data.transforms import PreprocessConfig, normalize
from segkit.device import resolve_device
from segkit.prediction.backend import Backend
from segkit.prediction.torch_ops import TorchOps


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
