"""Validation helpers: the sample images shown during training cover every class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segkit.training.validation import covering_samples


@dataclass
class Loaded:
    mask: np.ndarray


class SortedByClass:
    """Ten masks sorted by class, as many datasets are: 0-5 hold class 1, 6-8 class 2, 9 classes 2 and 3."""

    def __init__(self) -> None:
        self.masks = [np.array([[0, 1]])] * 6 + [np.array([[0, 2]])] * 3 + [np.array([[2, 3], [255, 0]])]

    def load(self, index: int) -> Loaded:
        return Loaded(self.masks[index])


def test_samples_cover_every_class_then_spread() -> None:
    source = SortedByClass()
    chosen = covering_samples(source, list(range(10)), 4, ignore_index=255)
    shown = set().union(*(set(np.unique(source.masks[i]).tolist()) for i in chosen)) - {255}
    assert len(chosen) == 4 and shown == {0, 1, 2, 3}
    assert 9 in chosen and any(i < 6 for i in chosen)  # the first four would all show class 1 only
    assert covering_samples(source, list(range(10)), 0, 255) == []
    assert covering_samples(source, [0, 1], 4, 255) == [0, 1]
