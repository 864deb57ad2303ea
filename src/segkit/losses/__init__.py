"""Segmentation losses by name: ``create_loss("ce+dice", num_classes=3)``.

Every loss takes ``(logits, target)``: logits ``(N, C, H, W)`` (``(N, 1, H, W)``
in binary mode) or a list of them (deep supervision, losses summed), target
``(N, H, W)`` class indices where ``ignore_index`` pixels count for nothing.
"""

from __future__ import annotations

from segkit.losses.base import SegmentationLoss
from segkit.losses.factory import LOSSES, CombinedLoss, create_loss
from segkit.losses.pixel import BinaryCrossEntropyLoss, CrossEntropyLoss, FocalLoss, OhemCrossEntropyLoss
from segkit.losses.region import dice_loss, lovasz_loss, tversky_loss
from segkit.losses.weights import class_weights_from_counts

__all__ = [
    "LOSSES",
    "BinaryCrossEntropyLoss",
    "CombinedLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "OhemCrossEntropyLoss",
    "SegmentationLoss",
    "class_weights_from_counts",
    "create_loss",
    "dice_loss",
    "lovasz_loss",
    "tversky_loss",
]
