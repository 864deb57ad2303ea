"""A dataset fingerprint: what the planner needs to know about the training data.

As nnU-Net's ``DatasetFingerprintExtractor`` does for 3-D volumes, this reads the training
samples once and summarises them: how many images, their sizes and aspect ratios, the
share of pixels and of images each class has, and for each class how small its objects
get: the 10th percentile of its connected components' area, and how thin its structures
are — the *width* of a class, from the median over its pixels of the distance to the
class's boundary (the pixels of a band ``w`` pixels wide lie at distances ``1 .. w/2``,
so ``w = 4 x median - 2``; a few annotation specks or one large region do not move it).
Width is what resizing must preserve: a crack 2 px wide vanishes when an image is
halved, a road 20 px wide does not.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

# At most this many images are measured (evenly spaced by index); shares use the same ones.
MAX_FINGERPRINT_IMAGES = 120
# Components smaller than this (pixels) are annotation specks, not objects.
MIN_COMPONENT_AREA = 4
PERCENTILE = 10
# Histogram of boundary distances: bins of a quarter pixel up to this many pixels.
DISTANCE_BINS, DISTANCE_RANGE = 4096, 1024.0


@dataclass
class Fingerprint:
    """The measured properties of a training set (sizes in original pixels).

    Attributes:
        num_images: training images.
        measured: images measured (all, or an evenly spaced subset of large datasets).
        heights, widths: the measured images' sizes.
        classes: class names.
        pixel_share: per class, its share of the labelled pixels.
        image_share: per class, the share of images containing it.
        object_area_p10: per class, 10th percentile of connected-component area (``None``: absent).
        width: per class, the width of its structures (``4 x`` the median distance of its pixels to
            the class's boundary ``- 2``), in original pixels (``None``: absent).
        ignore_share: share of pixels holding the ignore value.
    """

    num_images: int
    measured: int
    heights: list[int]
    widths: list[int]
    classes: list[str]
    pixel_share: list[float]
    image_share: list[float]
    object_area_p10: list[float | None]
    width: list[float | None]
    ignore_share: float

    @property
    def median_size(self) -> tuple[int, int]:
        """Median ``(height, width)``."""
        return int(np.median(self.heights)), int(np.median(self.widths))

    @property
    def max_size(self) -> tuple[int, int]:
        return max(self.heights), max(self.widths)

    @property
    def same_size(self) -> bool:
        return len(set(zip(self.heights, self.widths))) == 1

    def aspect_ratios(self) -> tuple[float, float]:
        """Smallest and largest width / height."""
        ratios = [w / h for h, w in zip(self.heights, self.widths)]
        return min(ratios), max(ratios)

    @property
    def one_class(self) -> bool:
        """One class against the rest (two classes in all)."""
        return len(self.classes) <= 2

    def rare_classes(self, threshold: float = 0.01) -> list[str]:
        """Classes present but covering less than ``threshold`` of the labelled pixels."""
        return [name for name, share in zip(self.classes, self.pixel_share) if 0 < share < threshold]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["heights"] = _summary(self.heights)
        values["widths"] = _summary(self.widths)
        return values

    def describe(self) -> str:
        """Two or three lines for the plan's printout."""
        (low, high), (height, width) = self.aspect_ratios(), self.median_size
        sizes = f"{self.num_images} images, median {width}x{height}" + (
            ""
            if self.same_size
            else f" (widths {min(self.widths)}-{max(self.widths)}, "
            f"heights {min(self.heights)}-{max(self.heights)}, aspect {low:.2f}-{high:.2f})"
        )
        shares = ", ".join(
            f"{name} {share:.1%}" + (f" (thin {thick:.0f}px)" if thick is not None and thick < 8 else "")
            for name, share, thick in zip(self.classes, self.pixel_share, self.width)
        )
        return f"{sizes}\n  class pixel shares: {shares}"


def _summary(values: list[int]) -> dict[str, int]:
    return {"min": int(min(values)), "median": int(np.median(values)), "max": int(max(values))}


def _measure(
    mask: np.ndarray, num_classes: int, ignore_index: int
) -> tuple[np.ndarray, list[list[float]], np.ndarray, int]:
    """Pixel counts, component areas and boundary-distance histograms per class, and ignored pixels of one mask."""
    counts = np.bincount(mask.ravel(), minlength=256)
    areas: list[list[float]] = [[] for _ in range(num_classes)]
    distances = np.zeros((num_classes, DISTANCE_BINS), np.int64)
    for label in np.flatnonzero(counts[:num_classes]):
        binary = (mask == label).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        component_areas = stats[1:, cv2.CC_STAT_AREA]
        areas[label] = component_areas[component_areas >= MIN_COMPONENT_AREA].astype(float).tolist()
        distance = cv2.distanceTransform(binary, cv2.DIST_L2, 3)[binary > 0]
        distances[label] = np.histogram(distance, DISTANCE_BINS, (0.0, DISTANCE_RANGE))[0]
    return counts[:num_classes], areas, distances, int(counts[ignore_index]) if ignore_index < 256 else 0


def compute_fingerprint(
    source: Any, indices: list[int], classes: list[str], ignore_index: int = 255, threads: int = 2
) -> Fingerprint:
    """Measure the training samples ``indices`` of ``source`` (``load(i)`` -> ``.image``, ``.mask``)."""
    chosen = indices
    if len(indices) > MAX_FINGERPRINT_IMAGES:
        step = len(indices) / MAX_FINGERPRINT_IMAGES
        chosen = [indices[int(k * step)] for k in range(MAX_FINGERPRINT_IMAGES)]
    num_classes = len(classes)

    def measure(index: int) -> tuple[tuple[int, int], Any]:
        mask = np.asarray(source.load(index).mask)
        return mask.shape, _measure(mask, num_classes, ignore_index)

    with ThreadPoolExecutor(max(1, threads)) as pool:  # decoding and OpenCV release the GIL
        results = list(pool.map(measure, chosen))
    pixels = np.zeros(num_classes, np.int64)
    images = np.zeros(num_classes, np.int64)
    areas: list[list[float]] = [[] for _ in range(num_classes)]
    distances = np.zeros((num_classes, DISTANCE_BINS), np.int64)
    ignored = total = 0
    for shape, (counts, image_areas, image_distances, ignore) in results:
        pixels += counts
        images += counts > 0
        for label in range(num_classes):
            areas[label] += image_areas[label]
        distances += image_distances
        ignored += ignore
        total += shape[0] * shape[1]
    labelled = max(int(pixels.sum()), 1)

    def percentile(values: list[float]) -> float | None:
        return float(np.percentile(values, PERCENTILE)) if values else None

    def width(histogram: np.ndarray) -> float | None:
        """``4 x median - 2`` of the class's boundary distances (the width of a band; at least 1)."""
        if not histogram.sum():
            return None
        cumulative = np.cumsum(histogram)
        median_bin = int(np.searchsorted(cumulative, cumulative[-1] / 2))
        median = (median_bin + 0.5) * DISTANCE_RANGE / DISTANCE_BINS
        return max(1.0, 4 * median - 2)

    return Fingerprint(
        num_images=len(indices),
        measured=len(chosen),
        heights=[shape[0] for shape, _ in results],
        widths=[shape[1] for shape, _ in results],
        classes=list(classes),
        pixel_share=(pixels / labelled).tolist(),
        image_share=(images / max(len(chosen), 1)).tolist(),
        object_area_p10=[percentile(values) for values in areas],
        width=[width(histogram) for histogram in distances],
        ignore_share=ignored / max(total, 1),
    )
