"""The edge fit: whether an object's outline in a mask lies on the photo's own edges, or would lie on them moved."""

from __future__ import annotations

import numpy as np
import pytest

from labelling.test_outlines import CLASSES, disc
from segkit.labelling.edges import EdgeFit, edge_agreement, edge_fits, edge_reliability


def photo(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A bright object on a dark, noisy background."""
    noise = np.random.default_rng(seed).normal(0, 6, (*mask.shape, 3))
    return np.clip(60 + 120 * mask[..., None] + noise, 0, 255).astype(np.uint8)


def only_fit(image: np.ndarray, labels: np.ndarray) -> EdgeFit:
    fits = edge_fits(image, labels, CLASSES, 0)
    assert len(fits) == 1
    return fits[0]


def test_an_outline_drawn_on_the_edges_gains_nothing() -> None:
    truth = disc((48, 48), 20)
    fit = only_fit(photo(truth), truth)
    assert fit.gain == 0 and fit.class_name == "person" and fit.area == int(truth.sum())
    near = only_fit(photo(truth), disc((49, 47), 20))  # a pixel or two off: labels are seldom exact
    assert near.gain == 0


def test_an_outline_drawn_beside_the_object_gains_from_one_shift() -> None:
    truth = disc((48, 48), 20)
    fit = only_fit(photo(truth), disc((55, 48), 20))  # drawn 7 px low
    assert fit.gain > 0.5 and fit.shift == (0, -7) and fit.growth == 0
    assert fit.describe() == "outline of person on the image's edges 7 px higher"
    assert fit.to_dict() == {
        "class": "person",
        "area": fit.area,
        "shift": [0, -7],
        "growth": 0,
        "gain": round(fit.gain, 4),
    }


def test_an_outline_grown_around_the_object_gains_from_shrinking() -> None:
    truth = disc((48, 48), 18)
    fit = only_fit(photo(truth), disc((48, 48), 24))  # 6 px too wide all round
    assert fit.gain > 0.5 and fit.growth == pytest.approx(-6, abs=1) and fit.shift == (0, 0)
    assert fit.describe().startswith("outline of person on the image's edges shrunk")


def test_small_objects_and_the_image_border_are_not_fitted() -> None:
    labels = disc((48, 48), 5)  # 81 pixels: too small to fit
    assert edge_fits(photo(labels), labels, CLASSES, 0) == []
    half = np.zeros((96, 96), np.uint8)
    half[:, :48] = 1  # cut by the border on three sides: only its right side is an outline
    fit = only_fit(photo(half), half)
    assert fit.gain == 0 and fit.shift == (0, 0) and fit.growth == 0  # slid along itself it stays on its edge
    everything = np.ones((96, 96), np.uint8)  # one class everywhere: no outline at all
    assert edge_fits(photo(everything), everything, CLASSES, 0) == []


def test_the_evidence_is_weighed_by_how_often_the_datas_outlines_lie_on_edges() -> None:
    on, off = EdgeFit("person", 500, (0, 0), 0, 0.0), EdgeFit("person", 500, (0, -7), 0, 1.5)
    assert edge_reliability([[on], [on], [off, on], []]) == pytest.approx(2 / 3)  # masks with nothing to fit: left out
    assert edge_reliability([[], []]) == 0.0
    assert edge_agreement([on], 1.0) == 1.0 and edge_agreement([], 1.0) == 1.0
    assert edge_agreement([on, off], 1.0) == 0.0  # a gain of 1 or more where every outline lies on edges
    assert edge_agreement([off], 0.0) == 1.0  # where outlines never lie on edges, an edge says nothing
    assert edge_agreement([off], 0.5) == pytest.approx(0.5**4)
