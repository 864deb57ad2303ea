"""Where a confident prediction and a mask disagree, and what kind of mistake each patch looks like.

- ``missing``: the model sees an object where the label has background;
- ``extra``: the label has an object where the model sees background;
- ``wrong_class``: both see an object, of different classes;
- ``boundary``: a band along an object that label and model both see, thinner than half of
  it (the label's area of its class and the model's of its own both go on beyond the band):
  its outline is off (by more than :data:`FEW_PIXELS`; thinner bands are the usual
  disagreement along edges and are not reported); or an ``extra`` region and ``missing`` ones of
  its class beside it (or the other way round), alike in area taken together
  (:data:`SHIFT_PIXELS`): a thin object drawn beside where it is.

Each image's label-quality score is cleanlab's (:func:`label_quality`); cleanlab has no notion of
regions or their kinds, which are written here (:func:`disputed_regions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("missing", "extra", "wrong_class", "boundary")
# a pixel is disputed where the model finds its class this much more probable than the label's: a margin, not a
# level, so that an under-confident model (probabilities around 0.5 even where it is right) still disputes
MARGIN = 0.2
MIN_AREA = 16  # regions smaller than this many pixels (or MIN_AREA_SHARE of the labelled ones) are specks
MIN_AREA_SHARE = 1e-4
FEW_PIXELS = 3  # boundary bands at most this wide are the usual disagreement along edges, not errors
BAND_SHARE = 0.5  # a boundary band is at most this share of the width of the object it runs along
# an extra (or missing) region and the missing (or extra) ones of its class at most this many pixels from it, their
# areas together within this ratio of its own: one object drawn a few pixels off (thin objects shifted leave two
# such lines and no band)
SHIFT_PIXELS, SHIFT_AREA_RATIO = 12, 2.0
EIGHT = np.ones((3, 3), bool)  # regions are 8-connected


@dataclass
class Region:
    """One disputed region: a connected patch where a confident prediction and the label differ.

    Attributes:
        kind: ``missing``, ``extra``, ``wrong_class`` or ``boundary`` (see the module's docstring).
        class_name: the class in dispute: the label's, or the model's where the label has background.
        label: the class the mask gives there.
        predicted: the class the model predicts there.
        area: its pixels.
        bbox: ``(x0, y0, x1, y1)`` in image pixels, ``x1`` and ``y1`` exclusive.
        confidence: the model's mean probability of its class there.
    """

    kind: str
    class_name: str
    label: str
    predicted: str
    area: int
    bbox: tuple[int, int, int, int]
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "class": self.class_name,
            "label": self.label,
            "predicted": self.predicted,
            "area": self.area,
            "bbox": list(self.bbox),
            "confidence": round(self.confidence, 4),
        }

    def describe(self) -> str:
        """``missing car (1,204 px)``; ``wrong_class: truck labelled car (...)``."""
        if self.kind == "wrong_class":
            return f"wrong class: {self.label}, model says {self.predicted} ({self.area:,} px)"
        return f"{self.kind} {self.class_name} ({self.area:,} px)"


def label_quality(labels: np.ndarray, probabilities: np.ndarray, ignore_index: int = 255) -> float:
    """cleanlab's label-quality score of one ``(H, W)`` mask under ``(C, H, W)`` probabilities (1 when all ignored).

    Ignored pixels are left out: the labelled ones are passed as one row of pixels, which the
    soft minimum (cleanlab's default ``softmin`` method) does not tell from an image.
    """
    from cleanlab.segmentation.rank import get_label_quality_scores

    labelled = labels != ignore_index
    if not labelled.any():
        return 1.0
    pixels = labels[labelled].astype(np.int64)[None, None, :]
    scores, _ = get_label_quality_scores(pixels, probabilities[:, labelled][None, :, None, :], verbose=False)
    return float(scores[0])


def disputed_regions(
    labels: np.ndarray,
    probabilities: np.ndarray,
    prediction: np.ndarray,
    classes: Sequence[str],
    background: int | None,
    ignore_index: int = 255,
) -> tuple[list[Region], np.ndarray]:
    """The regions where a confident prediction and the label differ, each with its kind, largest first.

    Args:
        labels: ``(H, W)`` the mask.
        probabilities: ``(C, H, W)`` the model's class probabilities.
        prediction: ``(H, W)`` the model's mask (argmax, or the binary threshold).
        classes: class names in index order.
        background: the background class (None: every class is an object, as in land-cover maps).
        ignore_index: mask value of pixels never disputed.

    Returns:
        The regions, and an ``(H, W)`` uint8 map of them: 0 outside, ``1 + KINDS.index(kind)`` inside.
    """
    from scipy import ndimage

    labelled = labels != ignore_index
    confidence = np.take_along_axis(probabilities, prediction[None].astype(np.intp), axis=0)[0]
    given = np.take_along_axis(probabilities, np.where(labelled, labels, 0)[None].astype(np.intp), axis=0)[0]
    disputed = labelled & (prediction != labels) & (confidence - given >= MARGIN)
    min_area = max(MIN_AREA, MIN_AREA_SHARE * int(labelled.sum()))
    kinds = np.zeros(labels.shape, np.uint8)
    regions: list[Region] = []
    pixels: list[tuple[tuple[slice, ...], np.ndarray]] = []  # each region's box and its pixels in the box
    label_areas: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per class, as the label and the model see it
    predicted_areas: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for pair in np.unique(labels[disputed].astype(np.int32) * 256 + prediction[disputed]):
        label_class, predicted_class = divmod(int(pair), 256)
        patch = disputed & (labels == label_class) & (prediction == predicted_class)
        components, count = ndimage.label(patch, structure=EIGHT)
        index = np.arange(1, count + 1)
        areas = ndimage.sum_labels(patch, components, index)
        widths = 2 * _largest_per_area(_inside_distance(patch), components, count) - 1
        # a band where the label's area of its class and the model's of its own both go on beyond it, thinner than
        # half the narrower of the two: the same object, its outline drawn elsewhere
        if label_class not in label_areas:
            label_areas[label_class] = _areas(labelled & (labels == label_class))
        if predicted_class not in predicted_areas:
            predicted_areas[predicted_class] = _areas(prediction == predicted_class)
        beside = [
            _beside(patch, components, side) for side in (label_areas[label_class], predicted_areas[predicted_class])
        ]
        bands = beside[0][0] & beside[1][0] & (widths <= BAND_SHARE * np.minimum(beside[0][1], beside[1][1]))
        thin = widths <= FEW_PIXELS
        for number, box in enumerate(ndimage.find_objects(components)):
            if areas[number] < min_area or box is None or (bands[number] and thin[number]):
                continue
            kind = "boundary" if bands[number] else _object_kind(label_class, predicted_class, background)
            inside = components[box] == number + 1
            disputed_class = predicted_class if label_class == background else label_class
            region = Region(
                kind,
                classes[disputed_class],
                classes[label_class],
                classes[predicted_class],
                int(areas[number]),
                (box[1].start, box[0].start, box[1].stop, box[0].stop),
                float(confidence[box][inside].mean()),
            )
            regions.append(region)
            pixels.append((box, inside))
    _pair_shifted(regions)
    for region, (box, inside) in zip(regions, pixels):
        kinds[box][inside] = 1 + KINDS.index(region.kind)
    regions.sort(key=lambda region: -region.area)
    return regions, kinds


def _pair_shifted(regions: list[Region]) -> None:
    """An ``extra`` or ``missing`` region and the regions of the other of the two kinds and its class near it,
    alike in area taken together, are one object drawn beside where it is (a thin crack or wire shifted by a few
    pixels leaves no band, only two lines, the model's often in pieces): all ``boundary``."""
    opposite = {"extra": "missing", "missing": "extra"}
    paired = []
    for region in regions:
        if region.kind not in opposite:
            continue
        near = [
            other
            for other in regions
            if other.kind == opposite[region.kind]
            and other.class_name == region.class_name
            and _gap(region.bbox, other.bbox) <= SHIFT_PIXELS
        ]
        total = sum(other.area for other in near)
        if near and SHIFT_AREA_RATIO * region.area >= total >= region.area / SHIFT_AREA_RATIO:
            paired += [region, *near]
    for region in paired:
        region.kind = "boundary"


def _gap(first: tuple[int, int, int, int], second: tuple[int, int, int, int]) -> int:
    """Pixels between two ``(x0, y0, x1, y1)`` boxes (0 when they touch or overlap)."""
    across = max(0, first[0] - second[2], second[0] - first[2])
    down = max(0, first[1] - second[3], second[1] - first[3])
    return max(across, down)


def _object_kind(label_class: int, predicted_class: int, background: int | None) -> str:
    if label_class == background:
        return "missing"
    return "extra" if predicted_class == background else "wrong_class"


def _inside_distance(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel outside ``mask``, the image's border counting as outside."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def _areas(side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected areas of ``side`` (numbered from 1, 0 outside) and the width of each."""
    from scipy import ndimage

    areas, number = ndimage.label(side, structure=EIGHT)
    return areas, 2 * _largest_per_area(_inside_distance(side), areas, number) - 1


def _largest_per_area(values: np.ndarray, areas: np.ndarray, count: int) -> np.ndarray:
    """The largest of the non-negative ``values`` in each of the areas numbered 1 .. ``count``: one pass, where
    ``ndimage.maximum`` sorts the whole image per call."""
    largest = np.zeros(count + 1, dtype=np.float64)
    np.maximum.at(largest, areas.ravel(), values.ravel())
    return largest[1:]


def _beside(
    patch: np.ndarray, components: np.ndarray, side: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per component of ``patch`` (which lies inside ``side``'s areas): whether its area goes on beyond the
    disputed pixels, and that area's width."""
    from scipy import ndimage

    areas, widths = side
    beyond = ndimage.sum_labels(~patch, areas, np.arange(1, len(widths) + 1)) > 0
    # each component lies inside one area: look it up at the component's first pixel
    numbers, first = np.unique(components.ravel(), return_index=True)
    owner = areas.ravel()[first[numbers > 0]] - 1
    return beyond[owner], widths[owner]
