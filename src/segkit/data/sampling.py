"""Training crops that find the small classes: random crops, a share of them centred on a rare class.

nnU-Net over-samples foreground: a third of its patches are forced to contain a
foreground voxel of a class present in the case. segkit does the same for 2-D crops,
and picks the class in proportion to ``1 / sqrt(pixel share)`` among the classes present
in the image, so a class that covers 0.5 % of the pixels is chosen about four times as
often as one that covers 8 %. Written here because albumentations' crops either ignore
the mask (``RandomCrop``) or pick any non-empty pixel with no notion of class rarity
(``CropNonEmptyMaskIfExists``), and they scan the whole mask on every call, where this
keeps a few thousand precomputed pixel locations per class and sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Pixel locations kept per class and sample (a uniform random subset of its pixels).
LOCATIONS_PER_CLASS = 2000


def class_locations(
    mask: np.ndarray, num_classes: int, rng: np.random.Generator, limit: int = LOCATIONS_PER_CLASS
) -> dict[int, np.ndarray]:
    """Up to ``limit`` flat pixel indices of each class present in ``mask`` (ignore value left out)."""
    flat = mask.ravel()
    counts = np.bincount(flat, minlength=256)[:num_classes]
    locations: dict[int, np.ndarray] = {}
    for label in np.flatnonzero(counts):
        where = np.flatnonzero(flat == label)
        if len(where) > limit:
            where = rng.choice(where, limit, replace=False)
        locations[int(label)] = where.astype(np.int64)
    return locations


def rarity_weights(pixel_share: Sequence[float]) -> np.ndarray:
    """``1 / sqrt(share)`` per class (0 for classes that never occur): how strongly a forced crop seeks a class."""
    share = np.asarray(pixel_share, dtype=np.float64)
    weights = np.zeros_like(share)
    present = share > 0
    weights[present] = 1.0 / np.sqrt(share[present])
    return weights


@dataclass(frozen=True)
class CropSampler:
    """Random ``size`` crops of an image and its mask; ``oversample`` of them centred on a rare class.

    Attributes:
        size: crop ``(height, width)``.
        oversample: probability that a crop is centred on a pixel of a class chosen by rarity.
        class_weights: per class, how strongly forced crops seek it (:func:`rarity_weights`).
        pad_value: image value where the crop leaves the image (images smaller than the crop).
        ignore_index: mask value there.
    """

    size: tuple[int, int]
    oversample: float
    class_weights: np.ndarray
    pad_value: int = 0
    ignore_index: int = 255

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        locations: dict[int, np.ndarray] | None,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One crop of ``(image (H,W,3), mask (H,W))``, padded when the image is smaller than the crop."""
        height, width = mask.shape
        crop_h, crop_w = self.size
        centre = self._forced_centre(width, locations, rng) if rng.random() < self.oversample else None
        if centre is None:
            top, left = self._random_start(height, crop_h, rng), self._random_start(width, crop_w, rng)
        else:
            y, x = centre
            top = self._place(y, crop_h, height, rng)
            left = self._place(x, crop_w, width, rng)
        return self._cut(image, top, left, self.pad_value), self._cut(mask, top, left, self.ignore_index)

    def _forced_centre(
        self, width: int, locations: dict[int, np.ndarray] | None, rng: np.random.Generator
    ) -> tuple[int, int] | None:
        if not locations:
            return None
        labels = np.fromiter(locations, dtype=np.int64)
        weights = self.class_weights[labels]
        if weights.sum() <= 0:
            return None
        label = int(rng.choice(labels, p=weights / weights.sum()))
        flat = int(rng.choice(locations[label]))
        return divmod(flat, width)

    @staticmethod
    def _random_start(length: int, crop: int, rng: np.random.Generator) -> int:
        """A uniform crop start; negative (padding before the image) when the image is shorter than the crop."""
        if length >= crop:
            return int(rng.integers(0, length - crop + 1))
        return -int(rng.integers(0, crop - length + 1))

    @staticmethod
    def _place(centre: int, crop: int, length: int, rng: np.random.Generator) -> int:
        """Crop start that puts ``centre`` near the middle (jittered by a quarter crop), inside the image."""
        jitter = crop // 4
        start = centre - crop // 2 + int(rng.integers(-jitter, jitter + 1))
        if length <= crop:
            return min(max(start, length - crop), 0)
        return min(max(start, 0), length - crop)

    def _cut(self, array: np.ndarray, top: int, left: int, fill: int) -> np.ndarray:
        """``array[top:top+h, left:left+w]``, filling what lies outside with ``fill`` (negative starts pad)."""
        crop_h, crop_w = self.size
        out = np.full((crop_h, crop_w, *array.shape[2:]), fill, dtype=array.dtype)
        src_top, src_left = max(top, 0), max(left, 0)
        src_bottom, src_right = min(top + crop_h, array.shape[0]), min(left + crop_w, array.shape[1])
        out[src_top - top : src_bottom - top, src_left - left : src_right - left] = array[
            src_top:src_bottom, src_left:src_right
        ]
        return out
