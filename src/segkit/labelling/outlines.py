"""How far each object's outline in a mask lies from the model's: a shift and a growth fitted per object.

A polygon drawn a few pixels beside its object, or grown around it, leaves a disputed band
along the outline that looks like the usual disagreement of a model's edges, and a soft
score of the pixels (cleanlab's) barely moves. What tells it apart is that the band is
*consistent*: one shift (or growth) of the label's outline puts most of it onto the model's.
For each object of the label, its outline pixels' signed distances to the model's region of
the class are fitted as ``growth + shift . normal`` (robust least squares), and the share of
the outline that the fit brings within :data:`~segkit.labelling.regions.FEW_PIXELS` of the
model's outline, beyond the share already there, is what the fit *gained*: near 0 for an
outline drawn where the model sees it (even a poor model's errors are local, not one shift),
large for one drawn off.

Written by hand: image registration in scikit-image (``phase_cross_correlation``) finds one
translation of a whole image, with no growth and no robustness to the parts a model misses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from segkit.labelling.regions import EIGHT, FEW_PIXELS

MAX_OFFSET = 15.0  # pixels: distances are clipped here (a shift or growth this large is no longer an outline's)
# an object whose outline lies MAX_OFFSET or more from the model's region along over this share of it is one the model
# does not see there: a missing or extra object (the disputed regions say so), not an outline drawn off
UNSEEN_SHARE = 0.3
MIN_OUTLINE = 40  # outline pixels: smaller objects give no fit
HUBER = 2.0  # pixels: residuals beyond this weigh less in the fit (the parts where the model itself is wrong)
NORMAL_SMOOTHING = 2.0  # pixels: the outline's normals come from its signed distance smoothed this much
MARGIN = int(MAX_OFFSET) + 2  # pixels around an object's box: its signed distance reaches the clip inside them


@dataclass
class OutlineFit:
    """One object's outline against the model's.

    Attributes:
        class_name: the object's class.
        area: its pixels in the label.
        shift: ``(dx, dy)`` pixels: where the label's outline lies from the model's, on average.
        growth: pixels: how far the label's outline lies outside the model's (negative: inside).
        gained: share of the outline that the shift and growth bring within ``FEW_PIXELS`` of the
            model's outline, beyond the share already there (0 .. 1).
    """

    class_name: str
    area: int
    shift: tuple[float, float]
    growth: float
    gained: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "area": self.area,
            "shift": [round(value, 2) for value in self.shift],
            "growth": round(self.growth, 2),
            "gained": round(self.gained, 4),
        }

    def describe(self) -> str:
        """``outline of person 6.1 px off (grown 0.4 px)``."""
        return f"outline of {self.class_name} {float(np.hypot(*self.shift)):.1f} px off (grown {self.growth:.1f} px)"


def outline_fits(
    labels: np.ndarray,
    prediction: np.ndarray,
    classes: Sequence[str],
    background: int | None,
    ignore_index: int = 255,
) -> list[OutlineFit]:
    """The fit of every object of the label (of a non-background class, with a long enough outline the model
    sees), largest gain first.

    Args:
        labels: ``(H, W)`` the mask.
        prediction: ``(H, W)`` the model's mask.
        classes: class names in index order.
        background: the background class (None: every class has objects).
        ignore_index: mask value that is no class.
    """
    fits = []
    for value, objects in label_objects(labels, background, ignore_index):
        # signed distance to the model's region of the class (positive outside it), once per class that has objects
        to_model = np.clip(signed_distance(prediction == value), -MAX_OFFSET, MAX_OFFSET)
        for labelled in objects:
            fit = _fit(labelled, to_model[labelled.box])
            if fit is not None:
                fits.append(OutlineFit(classes[value], labelled.area, *fit))
    return sorted(fits, key=lambda fit: -fit.gained)


@dataclass
class LabelledObject:
    """One connected object of a mask, cut out with :data:`MARGIN` pixels around it.

    Attributes:
        box: where the cut-out lies in the mask (row and column slices).
        inside: ``(h, w)`` bool, the object in the cut-out.
        area: its pixels.
        outline: ``(h, w)`` bool, its outline pixels (the image's border is no outline: objects cut
            by it go on beyond it).
    """

    box: tuple[slice, ...]
    inside: np.ndarray
    area: int
    outline: np.ndarray

    @cached_property
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of the outline pixels in the cut-out."""
        rows, cols = np.nonzero(self.outline)
        return rows, cols

    def normals(self) -> np.ndarray:
        """``(n, 2)``: the unit normals ``(dx, dy)`` pointing out of the object at each of :attr:`points` (from its
        signed distance smoothed by :data:`NORMAL_SMOOTHING`)."""
        from scipy import ndimage

        rows, cols = self.points
        smoothed = ndimage.gaussian_filter(signed_distance(self.inside), NORMAL_SMOOTHING)
        down, across = np.gradient(smoothed)
        normals = np.stack([across[rows, cols], down[rows, cols]], axis=1)
        return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-6)


def label_objects(
    labels: np.ndarray, background: int | None, ignore_index: int = 255
) -> Iterator[tuple[int, list[LabelledObject]]]:
    """Per class of ``labels`` (not the background, not ignored): its 8-connected objects whose outline is at least
    :data:`MIN_OUTLINE` pixels long, when it has any."""
    from scipy import ndimage

    for value in np.unique(labels):
        if value in (background, ignore_index):
            continue
        components, _ = ndimage.label(labels == value, structure=EIGHT)
        objects = []
        for number, box in enumerate(ndimage.find_objects(components), start=1):
            box = tuple(slice(max(0, part.start - MARGIN), part.stop + MARGIN) for part in box)
            inside = components[box] == number
            area = int(inside.sum())
            if area < MIN_OUTLINE:  # its outline can be no longer
                continue
            outline = inside & ~ndimage.binary_erosion(inside, border_value=1)
            if outline.sum() >= MIN_OUTLINE:
                objects.append(LabelledObject(box, inside, area, outline))
        if objects:
            yield int(value), objects


def outline_agreement(fits: Sequence[OutlineFit]) -> float:
    """``(1 - largest gain)^2``: 1 when no object's outline is better explained drawn elsewhere."""
    return (1.0 - max((fit.gained for fit in fits), default=0.0)) ** 2


def _fit(labelled: LabelledObject, to_model: np.ndarray) -> tuple[tuple[float, float], float, float] | None:
    """``(shift, growth, gained)`` of one object against the model's signed distance (cut out as the object is),
    or None when the model does not see it."""
    rows, cols = labelled.points
    if (np.abs(to_model[rows, cols]) >= MAX_OFFSET).mean() > UNSEEN_SHARE:
        return None  # before the normals: an object the model does not see costs no smoothing
    distance = to_model[rows, cols] + 0.5  # outline pixels lie half a pixel inside the drawn line
    design = np.column_stack([np.ones(len(distance)), labelled.normals()])
    weights = np.ones(len(distance))
    for _ in range(5):  # iteratively reweighted least squares with Huber weights
        root = np.sqrt(weights)
        coefficients = np.linalg.lstsq(design * root[:, None], distance * root, rcond=None)[0]
        residual = np.abs(distance - design @ coefficients)
        weights = np.where(residual <= HUBER, 1.0, HUBER / np.maximum(residual, 1e-6))
    gained = float((residual <= FEW_PIXELS).mean() - (np.abs(distance) <= FEW_PIXELS).mean())
    growth, dx, dy = (float(value) for value in coefficients)
    return (dx, dy), growth, max(0.0, gained)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the outline of ``mask``: positive outside, negative inside (``MAX_OFFSET``
    everywhere when the mask is empty, ``-MAX_OFFSET`` when it is full)."""
    from scipy import ndimage

    if not mask.any() or mask.all():
        return np.full(mask.shape, -MAX_OFFSET if mask.any() else MAX_OFFSET)
    return ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
