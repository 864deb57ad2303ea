"""Whether each object's outline in a mask lies on the image's own edges, or would lie on them drawn elsewhere.

The model-free half of the outline check (:mod:`segkit.labelling.outlines` is the model's half).
A polygon drawn a few pixels beside its object, or grown around it, leaves the object's edges
(the photo's brightness steps) just beside the drawn outline. For every object of the mask the
mean edge strength along its outline is measured where it is drawn, give or take :data:`NEAR`
pixels (labels are seldom exact), and moved by every shift and every growth of up to
:data:`REACH` pixels; the object's **gain** is how much stronger the strongest moved outline is
than the strongest one near where it was drawn (0: none is stronger by more than :data:`NOISE`).

How much a gain says depends on the data: in photos of people and of cracks the outlines of
nearly every clean mask lie on the image's edges (a gain on 4 % and 11 % of the masks), in aerial
land cover most do not (82 %: texture everywhere). So a gain is weighed by the dataset's own
**edge reliability**: the share of its masks none of whose outlines gains (a dataset's masks are
mostly right), see :func:`edge_agreement`.

Written by hand: no library checks a drawn outline against an image's edges (scikit-image's
active contours move a contour onto edges; they do not say whether one shift would put it there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segkit.labelling.outlines import LabelledObject, label_objects

REACH = 12  # pixels: the largest shift (each way, along rows and columns) and growth (out and in) tried
NEAR = 2  # pixels: an outline moved this little still counts as drawn where it is
EDGE_SMOOTHING = 1.0  # pixels: the image is smoothed this much before its brightness steps are measured
MIN_AREA = 200  # pixels: smaller objects are not fitted (along a short outline some move always finds an edge)
NOISE = 0.02  # gains up to this are none (a straight outline slid along itself stays on its edge, give or take noise)
# the agreement's exponent: a gain of 1 (an outline twice as strong elsewhere) in a dataset whose outlines all sit on
# edges leaves nothing of the score; chosen on five draws of label_audit.py, checked on five others (benchmarks/README)
AGREEMENT_POWER = 4


@dataclass
class EdgeFit:
    """One object's outline against the image's edges.

    Attributes:
        class_name: the object's class.
        area: its pixels in the label.
        shift: ``(dx, dy)`` pixels: the shift that puts the outline on the strongest edges (``(0, 0)`` for a growth).
        growth: pixels the outline grows (negative: shrinks) to lie on the strongest edges (0 for a shift).
        gain: how much stronger the edges along that moved outline are than along the drawn one, less 1 (0: none).
    """

    class_name: str
    area: int
    shift: tuple[int, int]
    growth: int
    gain: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "area": self.area,
            "shift": list(self.shift),
            "growth": self.growth,
            "gain": round(self.gain, 4),
        }

    def describe(self) -> str:
        """``outline of person on the image's edges 7 px lower`` (or ``… grown 6 px``)."""
        dx, dy = self.shift
        if self.growth:
            moved = f"{'grown' if self.growth > 0 else 'shrunk'} {abs(self.growth)} px"
        else:
            moved = ", ".join(
                f"{abs(step)} px {word}"
                for step, word in ((dy, "lower" if dy > 0 else "higher"), (dx, "right" if dx > 0 else "left"))
                if step
            )
        return f"outline of {self.class_name} on the image's edges {moved}"


def edge_strength(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32: the gradient magnitude of the image's brightness, smoothed by :data:`EDGE_SMOOTHING`."""
    from scipy import ndimage

    grey = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    grey = ndimage.gaussian_filter(grey, EDGE_SMOOTHING)
    return np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))


def edge_fits(
    image: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    background: int | None,
    ignore_index: int = 255,
) -> list[EdgeFit]:
    """The fit of every object of the label (of a non-background class, with a long enough outline) to the
    image's edges, largest gain first.

    Args:
        image: ``(H, W, 3)`` or ``(H, W)`` the photo, at the mask's size.
        labels: ``(H, W)`` the mask.
        classes: class names in index order.
        background: the background class (None: every class has objects).
        ignore_index: mask value that is no class.
    """
    strength = edge_strength(image)
    fits = [
        EdgeFit(classes[value], labelled.area, *_moved(labelled, strength[labelled.box]))
        for value, objects in label_objects(labels, background, ignore_index)
        for labelled in objects
        if labelled.area >= MIN_AREA
    ]
    return sorted(fits, key=lambda fit: -fit.gain)


def edge_reliability(fits: Sequence[Sequence[EdgeFit]]) -> float:
    """The share of masks (those with an outline to fit) none of whose objects' outlines gains: 1 when every
    outline of the data lies on the image's edges, near 0 where edges say little about outlines."""
    fitted = [image for image in fits if image]
    return sum(all(fit.gain == 0 for fit in image) for image in fitted) / len(fitted) if fitted else 0.0


def edge_agreement(fits: Sequence[EdgeFit], reliability: float) -> float:
    """``(1 - reliability * min(largest gain, 1)) ** AGREEMENT_POWER``: 1 when no outline lies better elsewhere."""
    gain = max((fit.gain for fit in fits), default=0.0)
    return float((1.0 - reliability * min(gain, 1.0)) ** AGREEMENT_POWER)


def _moved(labelled: LabelledObject, strength: np.ndarray) -> tuple[tuple[int, int], int, float]:
    """``(shift, growth, gain)``: the move of the object's outline onto the strongest edges (``strength`` cut out
    as the object is) and what it gains over the outline as drawn."""
    (rows, cols), normals = labelled.points, labelled.normals()
    height, width = strength.shape

    def mean_at(row_offsets: np.ndarray | int, col_offsets: np.ndarray | int) -> float:
        at_rows = np.clip(np.rint(rows + row_offsets).astype(np.int64), 0, height - 1)
        at_cols = np.clip(np.rint(cols + col_offsets).astype(np.int64), 0, width - 1)
        return float(strength[at_rows, at_cols].mean())

    # (how far the outline moves, shift, growth, mean edge strength there)
    steps = range(-REACH, REACH + 1)
    moves = [(max(abs(dx), abs(dy)), (dx, dy), 0, mean_at(dy, dx)) for dy in steps for dx in steps]
    moves += [(abs(step), (0, 0), step, mean_at(step * normals[:, 1], step * normals[:, 0])) for step in steps if step]
    near = max(edge for distance, _, _, edge in moves if distance <= NEAR)
    _, shift, growth, far = max((move for move in moves if move[0] >= 2 * NEAR), key=lambda move: move[3])
    gain = far / near - 1.0 if near > 0 else (1.0 if far > 0 else 0.0)
    return (shift, growth, gain) if gain > NOISE else ((0, 0), 0, 0.0)
