"""The contract every segkit loss follows: ``loss(logits, target) -> scalar``.

Multi-class: logits ``(N, C, H, W)``, target ``(N, H, W)`` class indices.
Binary: logits ``(N, 1, H, W)``, target ``(N, H, W)`` (or ``(N, 1, H, W)``)
with values 0, 1. In both modes target pixels equal to ``ignore_index`` do not
contribute to the value or the gradient, and a batch with no valid pixel
gives a loss of exactly 0 (still attached to the graph) instead of NaN.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class SegmentationLoss(nn.Module, ABC):
    """Base class: checks shapes, computes in float32 and skips batches with no valid pixel.

    Subclasses implement :meth:`compute`, which only sees batches with at least
    one valid pixel.

    Args:
        binary: one logit channel (sigmoid) instead of ``C`` channels (softmax).
        ignore_index: target value excluded from the loss.
    """

    class_weights: torch.Tensor | None  # the buffer of the subclasses that weight classes

    def __init__(self, *, binary: bool, ignore_index: int) -> None:
        super().__init__()
        self.binary = binary
        self.ignore_index = ignore_index

    @abstractmethod
    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The loss of float32 ``logits`` and long ``target`` (N, H, W); ``valid`` marks non-ignored pixels."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = self._check_target(logits, target)
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return logits.float().sum() * 0.0
        return self.compute(logits.float(), target, valid)

    def _check_target(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.binary and target.dim() == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"{type(self).__name__} expects logits (N, C, H, W) and target (N, H, W), "
                f"got {tuple(logits.shape)} and {tuple(target.shape)}"
            )
        if self.binary and logits.shape[1] != 1:
            raise ValueError(f"binary mode expects one logit channel, got {logits.shape[1]}")
        return target.long()

    def extra_repr(self) -> str:
        return f"binary={self.binary}, ignore_index={self.ignore_index}"


def pixel_weights(target: torch.Tensor, valid: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel weights: ``class_weights[target]`` (1 without weights) at valid pixels, 0 at ignored ones."""
    if class_weights is None:
        return valid.float()
    return class_weights.float()[target.where(valid, 0)] * valid


def normalize(total: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``total / weights.sum()``: the weighted mean of a weighted per-pixel sum.

    With class weights ``w`` this is ``sum_i w[y_i] l_i / sum_i w[y_i]`` over
    valid pixels, the normalisation of ``torch.nn.CrossEntropyLoss(weight=w)``;
    without weights, the plain mean over valid pixels. The denominator is
    clamped away from 0 (all valid pixels of weight-0 classes).
    """
    return total / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)
