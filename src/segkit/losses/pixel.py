"""Per-pixel losses: cross-entropy (softmax), binary cross-entropy (sigmoid) and focal.

Written on ``torch.nn.functional`` rather than smp because smp's versions
get the ignore handling wrong for segkit's purposes:
``SoftCrossEntropyLoss`` and ``SoftBCEWithLogitsLoss`` zero the ignored pixels
but still divide by *all* pixels, so the value shrinks with the number of
ignored pixels; and smp's multi-class ``FocalLoss`` is a sum of one-vs-rest
*sigmoid* focal terms, not the softmax focal loss matching the softmax
probabilities segkit predicts with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segkit.losses.base import SegmentationLoss, normalize, pixel_weights


class CrossEntropyLoss(SegmentationLoss):
    """Softmax cross-entropy, equal to ``torch.nn.CrossEntropyLoss`` (weights, label smoothing, ignore).

    The only difference: a batch whose pixels are all ignored gives 0, not NaN.

    Args:
        ignore_index: target value excluded from the loss.
        class_weights: ``(C,)`` weights; the mean is weighted, ``sum w[y] l / sum w[y]``.
        label_smoothing: ``eps`` in ``[0, 1)``; the target becomes ``(1 - eps) one_hot + eps / C``.
    """

    def __init__(
        self,
        *,
        ignore_index: int = 255,
        class_weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(binary=False, ignore_index=ignore_index)
        self.register_buffer("class_weights", class_weights)
        self.label_smoothing = label_smoothing

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # already multiplied by the class weight, 0 at ignored pixels
        per_pixel = F.cross_entropy(
            logits,
            target,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        return normalize(per_pixel.sum(), pixel_weights(target, valid, self.class_weights))


class BinaryCrossEntropyLoss(SegmentationLoss):
    """Sigmoid binary cross-entropy for one logit channel, averaged over valid pixels.

    Args:
        ignore_index: target value excluded from the loss.
        class_weights: ``(2,)`` weights of background and foreground pixels (weighted mean).
        label_smoothing: ``eps``; targets become ``1 - eps/2`` and ``eps/2``, which is
            what softmax cross-entropy with 2 classes and the same ``eps`` uses.
        pos_weight: factor on the positive term, as in ``torch.nn.BCEWithLogitsLoss``.
    """

    pos_weight: torch.Tensor | None

    def __init__(
        self,
        *,
        ignore_index: int = 255,
        class_weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__(binary=True, ignore_index=ignore_index)
        self.register_buffer("class_weights", class_weights)
        self.register_buffer("pos_weight", pos_weight)
        self.label_smoothing = label_smoothing

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        labels = target.where(valid, 0)
        soft = labels * (1.0 - self.label_smoothing) + self.label_smoothing / 2
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], soft, pos_weight=self.pos_weight, reduction="none")
        weights = pixel_weights(labels, valid, self.class_weights)
        return normalize((per_pixel * weights).sum(), weights)


def per_pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, binary: bool) -> torch.Tensor:
    """``-log p_true`` per pixel: sigmoid on one channel (binary) or softmax over the classes."""
    if binary:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
    return F.cross_entropy(logits, labels, reduction="none")


class OhemCrossEntropyLoss(SegmentationLoss):
    """Cross-entropy over the hard pixels only: online hard example mining (Shrivastava et al., CVPR 2016).

    As mmsegmentation's ``OHEMPixelSampler``: a valid pixel counts when the probability of
    its true class is below ``threshold``; if fewer than ``min_kept`` of the valid pixels
    qualify, the ``min_kept`` share with the lowest true-class probability is kept instead.
    The loss is the (class-weighted) mean cross-entropy of the kept pixels, so easy
    background does not drown the rare, hard classes. Softmax, or sigmoid in binary mode.

    Args:
        binary: one sigmoid channel instead of ``C`` softmax channels.
        ignore_index: target value excluded from the loss.
        threshold: pixels whose true-class probability is below it are hard.
        min_kept: share of the valid pixels kept at least, in ``(0, 1]``.
        class_weights: per-class pixel weights of the kept pixels.
    """

    def __init__(
        self,
        *,
        binary: bool,
        ignore_index: int = 255,
        threshold: float = 0.7,
        min_kept: float = 0.1,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(binary=binary, ignore_index=ignore_index)
        if not 0.0 < threshold <= 1.0 or not 0.0 < min_kept <= 1.0:
            raise ValueError(f"ohem threshold and min_kept must be in (0, 1], got {threshold}, {min_kept}")
        self.threshold = threshold
        self.min_kept = min_kept
        self.register_buffer("class_weights", class_weights)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        labels = target.where(valid, 0)
        per_pixel = per_pixel_cross_entropy(logits, labels, self.binary)
        with torch.no_grad():
            true_probability = torch.exp(-per_pixel).masked_fill(~valid, 2.0)  # ignored pixels never count
            count = int(valid.sum())
            keep = max(1, int(round(self.min_kept * count)))
            cutoff = max(self.threshold, float(true_probability.flatten().kthvalue(min(keep, count)).values))
            hard = valid & (true_probability <= cutoff)
        weights = pixel_weights(labels, hard, self.class_weights)
        return normalize((per_pixel * weights).sum(), weights)


def focal_term(per_pixel_ce: torch.Tensor, gamma: float) -> torch.Tensor:
    """``(1 - p_t)^gamma * -log(p_t)`` from ``-log(p_t)`` (Lin et al., ICCV 2017).

    ``1 - p_t`` is clamped to a tiny positive value so the gradient stays finite
    for ``gamma < 1`` at perfectly classified pixels (smp's version gives NaN there).
    """
    one_minus_pt = (-torch.expm1(-per_pixel_ce)).clamp_min(1e-12)
    return one_minus_pt.pow(gamma) * per_pixel_ce


class FocalLoss(SegmentationLoss):
    """Focal loss: softmax (multi-class) or sigmoid (binary), averaged over valid pixels.

    Args:
        binary: one sigmoid channel instead of ``C`` softmax channels.
        ignore_index: target value excluded from the loss.
        gamma: focusing parameter (0 gives cross-entropy).
        alpha: binary only: weight of foreground pixels, ``1 - alpha`` for background.
        class_weights: per-class pixel weights (weighted mean, as in cross-entropy).
    """

    def __init__(
        self,
        *,
        binary: bool,
        ignore_index: int = 255,
        gamma: float = 2.0,
        alpha: float | None = None,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(binary=binary, ignore_index=ignore_index)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        if alpha is not None and not (binary and 0.0 <= alpha <= 1.0):
            raise ValueError(f"focal alpha must be in [0, 1] and applies to binary mode only, got {alpha}")
        self.gamma = gamma
        self.alpha = alpha
        self.register_buffer("class_weights", class_weights)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        labels = target.where(valid, 0)
        per_pixel = per_pixel_cross_entropy(logits, labels, self.binary)
        loss = focal_term(per_pixel, self.gamma)
        if self.alpha is not None:
            loss = loss * torch.where(labels == 1, self.alpha, 1.0 - self.alpha)
        weights = pixel_weights(labels, valid, self.class_weights)
        return normalize((loss * weights).sum(), weights)
