"""Per-image results of an evaluation: each image's confusion matrix, its scores, the worst images.

:func:`~segkit.evaluation.evaluate.evaluate_checkpoint` and
:func:`~segkit.evaluation.folders.evaluate_folders` take an ``on_image`` callback that
receives one :class:`ImageResult` per image; :class:`PerImageScores` is such a callback:
it keeps a row of scores per image and the pixels of the ``worst`` images (lowest mIoU),
shrunk for display, so memory stays bounded whatever the dataset's size.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from segkit.evaluation.confusion import confusion_matrix
from segkit.evaluation.metrics import compute_metrics
from segkit.visualize import fit_within

DISPLAY_SIDE = 480  # worst images are kept at most this many pixels on their longer side


@dataclass(frozen=True)
class ImagePixels:
    """One image's pixels: ``(H, W, 3)`` RGB image (None when only masks were evaluated), truth, prediction."""

    image: np.ndarray | None
    truth: np.ndarray
    prediction: np.ndarray


@dataclass(frozen=True)
class ImageResult:
    """One evaluated image.

    Attributes:
        name: the sample's name (file stem).
        matrix: ``(C, C)`` int64 pixel counts, rows truth, columns prediction, ignored pixels left out.
        load: returns the image's pixels (read again, or kept, by the evaluation that made it).
    """

    name: str
    matrix: np.ndarray
    load: Callable[[], ImagePixels]

    @classmethod
    def from_masks(
        cls,
        name: str,
        prediction: np.ndarray,
        truth: np.ndarray,
        num_classes: int,
        ignore_index: int | None,
        image: np.ndarray | None = None,
    ) -> ImageResult:
        """The result of masks in memory (their confusion matrix by :func:`confusion_matrix`)."""
        matrix = np.asarray(confusion_matrix(prediction, truth, num_classes, ignore_index))
        pixels = ImagePixels(image, truth, prediction)
        return cls(name, matrix, lambda: pixels)


ImageCallback = Callable[[ImageResult], None]


@dataclass
class ImageScore:
    """Scores of one image (NaN where undefined: mIoU of an image without labelled pixels).

    Attributes:
        name: the sample's name.
        miou: mean IoU over the classes present in the image's truth or prediction.
        pixel_accuracy: correct / labelled pixels.
        iou: IoU per class (NaN for a class absent from both truth and prediction).
        pixels: labelled pixels.
    """

    name: str
    miou: float
    pixel_accuracy: float
    iou: list[float]
    pixels: int


@dataclass
class PerImageScores:
    """An ``on_image`` callback that scores every image and keeps the ``worst`` ones' pixels.

    Args:
        worst: how many of the lowest-mIoU images to keep for display.
        display_side: the kept images are shrunk to fit this many pixels.

    Attributes:
        scores: one :class:`ImageScore` per image, in evaluation order.
    """

    worst: int = 8
    display_side: int = DISPLAY_SIDE
    scores: list[ImageScore] = field(default_factory=list)
    _heap: list[tuple[float, int, ImageScore, ImagePixels]] = field(default_factory=list, repr=False)
    _counter: itertools.count = field(default_factory=itertools.count, repr=False)

    def __call__(self, result: ImageResult) -> None:
        metrics = compute_metrics(result.matrix)
        score = ImageScore(
            result.name,
            metrics["mIoU"],
            metrics["pixel_accuracy"],
            [row["iou"] for row in metrics["per_class"].values()],
            metrics["num_pixels"],
        )
        self.scores.append(score)
        if self.worst <= 0 or math.isnan(score.miou):
            return
        if len(self._heap) == self.worst and -self._heap[0][0] <= score.miou:
            return  # not among the worst: its pixels are never loaded
        entry = (-score.miou, next(self._counter), score, self._shrink(result.load()))
        if len(self._heap) < self.worst:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def worst_images(self) -> list[tuple[ImageScore, ImagePixels]]:
        """The kept images, lowest mIoU first (ties: in evaluation order)."""
        return [(score, pixels) for _, _, score, pixels in sorted(self._heap, key=lambda item: (-item[0], item[1]))]

    def _shrink(self, pixels: ImagePixels) -> ImagePixels:
        side = self.display_side
        image = None if pixels.image is None else fit_within(pixels.image, side)
        return ImagePixels(
            image,
            fit_within(np.asarray(pixels.truth, np.uint8), side, nearest=True),
            fit_within(np.asarray(pixels.prediction, np.uint8), side, nearest=True),
        )
