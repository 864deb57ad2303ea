"""Array operations on torch tensors, computed on the tensors' own device (prediction's GPU path)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


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
