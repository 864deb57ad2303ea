"""Class weights from pixel counts: inverse median frequency (Eigen & Fergus 2015, SegNet)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from segkit.errors import SegkitError


def class_weights_from_counts(pixel_counts: np.ndarray | torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    """Median-frequency balancing weights ``w_c = median(freq) / freq_c``.

    ``freq_c = count_c / P_c`` where ``count_c`` is the number of pixels of class
    ``c`` and ``P_c`` the total number of labelled pixels of the images in which
    ``c`` appears (ignored pixels are not counted anywhere). The median is taken
    over the classes that appear. A class that never appears gets weight 0 (it
    has no pixel to weight; 0 also keeps it out of label smoothing).

    Args:
        pixel_counts: ``(num_images, num_classes)`` per-image pixel counts. A 1-D
            ``(num_classes,)`` array is treated as one image (then ``P_c`` is the
            total of all labelled pixels, i.e. plain inverse frequency / median).

    Returns:
        ``(num_classes,)`` float32 weights; the median class gets weight 1.

    Raises:
        SegkitError: no labelled pixel at all.
        ValueError: counts that are not a 1-D or 2-D array of non-negative numbers.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim == 1:
        counts = counts[None]
    if counts.ndim != 2 or bool((counts < 0).any()):
        raise ValueError(f"pixel_counts must be a non-negative (images, classes) array, got shape {counts.shape}")
    image_pixels = counts.sum(axis=1, keepdims=True)
    pixels_where_present = (image_pixels * (counts > 0)).sum(axis=0)
    present = pixels_where_present > 0
    if not present.any():
        raise SegkitError(None, "cannot compute class weights: the masks contain no labelled pixel")
    frequency = np.zeros(counts.shape[1])
    frequency[present] = counts.sum(axis=0)[present] / pixels_where_present[present]
    weights = np.zeros(counts.shape[1])
    weights[present] = np.median(frequency[present]) / frequency[present]
    return torch.tensor(weights, dtype=torch.float32)
