"""Test-time augmentation: average class probabilities over flipped and rescaled inputs.

Every pass transforms the normalised network input, runs the model, undoes the
transform on the probabilities (flip back; bilinear resize back to the input
size) and the passes are averaged with equal weight:

    P = 1 / |T| * sum_{t in T} t^-1( p( t(x) ) )

``T`` is every combination of the chosen flips and scales (``flip+scale``: 2 x 3 =
6 passes). It works on whatever batch the predictor runs (whole images or tile
windows), so it combines freely with batching and tiling, and on numpy arrays
and torch tensors alike (:mod:`segkit.prediction.arrays`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from segkit.errors import SegkitError
from segkit.prediction.arrays import Array, array_ops

TTA_SCALES = (0.75, 1.0, 1.25)
TTA_CHOICES = ("flip", "vflip", "scale")


@dataclass(frozen=True)
class TTAConfig:
    """Which augmentations a prediction averages over.

    Attributes:
        hflip: add horizontally flipped passes.
        vflip: add vertically flipped passes (only useful for models trained with
            vertical flips, e.g. aerial or microscopy images).
        scales: input scale factors (``1.0`` is the plain pass).
    """

    hflip: bool = False
    vflip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        scales = tuple(float(scale) for scale in self.scales)
        if not scales or min(scales) <= 0:
            raise SegkitError(None, f"TTA scales must be positive, got {list(self.scales)}")
        object.__setattr__(self, "scales", scales)

    @classmethod
    def parse(cls, text: str | None) -> TTAConfig:
        """``"none"``, ``"flip"``, ``"flip+scale"``, ``"flip+vflip+scale"`` ... -> TTAConfig."""
        if text is None or text.strip().lower() in ("", "none"):
            return cls()
        parts = [part.strip().lower() for part in text.split("+")]
        unknown = sorted(set(parts) - set(TTA_CHOICES))
        if unknown:
            raise SegkitError(None, f"unknown TTA {', '.join(unknown)}; combine {', '.join(TTA_CHOICES)} with '+'")
        return cls(hflip="flip" in parts, vflip="vflip" in parts, scales=TTA_SCALES if "scale" in parts else (1.0,))

    def __str__(self) -> str:
        parts = ["flip"] * self.hflip + ["vflip"] * self.vflip + ["scale"] * (self.scales != (1.0,))
        return "+".join(parts) or "none"

    def passes(self) -> list[tuple[float, tuple[int, ...]]]:
        """``(scale, flip_axes)`` of every pass; flip axes index ``(N, C, H, W)`` arrays."""
        flips: list[tuple[int, ...]] = [()] + [(3,)] * self.hflip
        if self.vflip:
            flips += [dims + (2,) for dims in flips]
        return list(itertools.product(self.scales, flips))


def augmented_probabilities(images: Array, probabilities: Callable[[Array], Array], config: TTAConfig) -> Array:
    """Mean probabilities over the passes of ``config``, at the size of ``images``.

    Args:
        images: normalised ``(N, 3, H, W)`` network input (numpy array or torch tensor).
        probabilities: the model and its activation: ``(N, 3, h, w)`` -> ``(N, C, h, w)``.
        config: the augmentations.
    """
    ops = array_ops(images)
    height, width = images.shape[-2:]
    total: Array | None = None
    passes = config.passes()
    for scale, axes in passes:
        inputs = images
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            inputs = ops.resize(images, size, antialias=True)
        if axes:
            inputs = ops.flip(inputs, axes)
        scores = probabilities(inputs)
        if axes:
            scores = ops.flip(scores, axes)
        if scale != 1.0:
            scores = ops.resize(scores, (height, width))
        total = scores if total is None else total + scores
    assert total is not None  # passes() is never empty
    return total / len(passes) if len(passes) > 1 else total
