"""The outline fit: a shift and a growth per object of a mask against the model's mask."""

from __future__ import annotations

import numpy as np
import pytest

from segkit.labelling.outlines import OutlineFit, outline_agreement, outline_fits

CLASSES = ["background", "person"]


def disc(centre: tuple[int, int], radius: float, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).astype(np.uint8)


def only_fit(labels: np.ndarray, prediction: np.ndarray) -> OutlineFit:
    fits = outline_fits(labels, prediction, CLASSES, 0)
    assert len(fits) == 1
    return fits[0]


def test_an_outline_drawn_beside_the_object_is_fitted_as_a_shift() -> None:
    model = disc((48, 48), 20)
    fit = only_fit(disc((54, 48), 20), model)  # drawn 6 px low
    assert fit.shift[0] == pytest.approx(0, abs=0.5) and fit.shift[1] == pytest.approx(6, abs=1)
    assert fit.growth == pytest.approx(0, abs=1) and fit.gained > 0.6
    assert outline_agreement([fit]) < 0.2
    assert fit.class_name == "person" and fit.area == int(disc((54, 48), 20).sum())
    assert fit.describe().startswith("outline of person 6.") and fit.to_dict()["shift"][1] == round(fit.shift[1], 2)


def test_an_outline_grown_around_the_object_is_fitted_as_a_growth() -> None:
    fit = only_fit(disc((48, 48), 26), disc((48, 48), 20))  # 6 px too wide all round
    assert fit.growth == pytest.approx(6, abs=1) and np.hypot(*fit.shift) < 0.5 and fit.gained > 0.6


def test_an_outline_where_the_model_sees_it_gains_nothing() -> None:
    model = disc((48, 48), 20)
    assert only_fit(model, model).gained == 0 and outline_agreement(outline_fits(model, model, CLASSES, 0)) == 1
    notched = model.copy()
    notched[28:40, 40:56] = 0  # the model misses a piece: an error in one place, not one shift
    fit = only_fit(model, notched)
    assert fit.gained < 0.15 and outline_agreement([fit]) > 0.7


def test_objects_the_model_does_not_see_and_specks_are_not_fitted() -> None:
    labels = disc((48, 48), 20)
    labels[2:5, 2:5] = 1  # a speck: too short an outline to fit
    assert outline_fits(labels, np.zeros_like(labels), CLASSES, 0) == []  # missed: the disputed regions say so
    assert len(outline_fits(labels, disc((48, 48), 20), CLASSES, 0)) == 1
    assert outline_agreement([]) == 1


def test_the_image_border_is_no_outline_and_every_class_has_objects_without_a_background() -> None:
    model = np.zeros((96, 96), np.uint8)
    model[40:, 20:70] = 1  # a body cut by the bottom of the photo
    labels = np.zeros_like(model)
    labels[40:, 26:76] = 1  # drawn 6 px right
    fit = only_fit(labels, model)
    assert fit.shift[0] == pytest.approx(6, abs=1) and abs(fit.shift[1]) < 1 and abs(fit.growth) < 1.5
    both = np.where(model == 1, 1, 0).astype(np.uint8)
    fits = outline_fits(both, both, CLASSES, None)  # no background: the background's own area is an object
    assert sorted(fit.class_name for fit in fits) == CLASSES and all(fit.gained == 0 for fit in fits)
    ignored = labels.copy()
    ignored[:10] = 255
    assert [fit.class_name for fit in outline_fits(ignored, model, CLASSES, 0)] == ["person"]
