"""Region losses from segmentation_models_pytorch: Dice, Tversky and Lovász.

Their ignore handling was checked against hand computations
(tests/losses/test_losses.py): Dice and Tversky zero both the probabilities
and the one-hot target at ignored pixels, so those pixels leave the
intersection, the false positives/negatives and the cardinality; Lovász drops
ignored pixels before sorting the errors. Two smp behaviours to know:

- Dice/Tversky sum over the whole batch (not per image) and average over all
  classes, but a class absent from the batch's target contributes 0 (its Dice
  is undefined), so false positives of an absent class are only penalised
  through the other classes' scores.
- Lovász-softmax averages over the classes present in the target.

:class:`SegmentationLoss` adds what smp lacks: shape checks, float32, and 0
rather than an error or NaN for a batch whose pixels are all ignored.
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from segkit.losses.base import SegmentationLoss


class SmpRegionLoss(SegmentationLoss):
    """Adapter running an smp loss built with the same mode and ``ignore_index``."""

    def __init__(self, loss: nn.Module, *, binary: bool, ignore_index: int) -> None:
        super().__init__(binary=binary, ignore_index=ignore_index)
        self.loss = loss

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target)


def _mode(binary: bool) -> str:
    return smp_losses.BINARY_MODE if binary else smp_losses.MULTICLASS_MODE


def dice_loss(*, binary: bool, ignore_index: int, smooth: float = 0.0) -> SmpRegionLoss:
    """Soft Dice ``1 - (|P*T| + smooth) / ((|P| + |T|) / 2 + smooth)`` on softmax or sigmoid probabilities."""
    if smooth < 0:
        raise ValueError(f"dice smooth must be >= 0, got {smooth}")
    loss = smp_losses.DiceLoss(_mode(binary), smooth=smooth, ignore_index=ignore_index)
    return SmpRegionLoss(loss, binary=binary, ignore_index=ignore_index)


def tversky_loss(
    *, binary: bool, ignore_index: int, alpha: float = 0.3, beta: float = 0.7, gamma: float = 1.0
) -> SmpRegionLoss:
    """Tversky ``(1 - TP / (TP + alpha FP + beta FN))^gamma`` (Salehi et al. 2017; alpha=beta=0.5 is Dice)."""
    if min(alpha, beta) < 0 or gamma <= 0:
        raise ValueError(f"tversky needs alpha, beta >= 0 and gamma > 0, got {alpha}, {beta}, {gamma}")
    loss = smp_losses.TverskyLoss(_mode(binary), ignore_index=ignore_index, alpha=alpha, beta=beta, gamma=gamma)
    return SmpRegionLoss(loss, binary=binary, ignore_index=ignore_index)


def lovasz_loss(*, binary: bool, ignore_index: int) -> SmpRegionLoss:
    """Lovász-softmax (multi-class) or Lovász-hinge (binary), Berman et al., CVPR 2018."""
    loss = smp_losses.LovaszLoss(_mode(binary), ignore_index=ignore_index)
    return SmpRegionLoss(loss, binary=binary, ignore_index=ignore_index)
