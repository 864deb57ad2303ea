"""Fully connected CRF post-processing (Krähenbühl & Koltun, NeurIPS 2011), as DeepLab v1/v2 used it.

Written in PyTorch because the usual implementation (pydensecrf, a C++
permutohedral lattice) is unmaintained, CPU-only and hard to install; this
runs on CPU and GPU with plain tensor operations.

Model: the energy of a labelling ``x`` is ``sum_i U_i(x_i) + sum_{i<j}
mu(x_i, x_j) k(f_i, f_j)`` with unary ``U_i = -log P_i`` (the network's
probabilities), Potts compatibility ``mu = [x_i != x_j]`` and two Gaussian
kernels over pixel positions ``p`` and colours ``I``::

    k(i, j) = w_s exp(-|p_i - p_j|^2 / 2 s^2)                                 (smoothness)
            + w_b exp(-|p_i - p_j|^2 / 2 s_xy^2 - |I_i - I_j|^2 / 2 s_rgb^2)   (appearance)

Mean-field inference iterates ``Q_i(l) ∝ exp(-U_i(l) + sum_m w_m
sum_{j != i} k_m(i, j) Q_j(l) / sum_{j != i} k_m(i, j))``: with Potts
compatibility each label gains the kernel-weighted support of the same label
around the pixel. Each kernel is normalised per pixel, as the reference
implementation's default normalisation does, so the weights are comparable
to the unary's scale.

Approximation: the exact sum over all pixel pairs is O(N^2). The smoothness
kernel is computed exactly as a separable Gaussian filter. The appearance
kernel is evaluated on a *dilated local window* (``window`` x ``window``
samples spaced ``d`` pixels apart, with ``d`` chosen so the window reaches
two ``s_xy``), the ConvCRF approximation (Teichmann & Cipolla, BMVC 2019)
with dilation instead of down-sampling: each sampled neighbour keeps its own
full-resolution colour, so edges stay sharp, and memory stays O(C·H·W).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def dense_crf(
    probabilities: torch.Tensor | np.ndarray,
    image: torch.Tensor | np.ndarray,
    *,
    iterations: int = 5,
    spatial_sigma: float = 3.0,
    spatial_weight: float = 3.0,
    bilateral_sigma_xy: float = 60.0,
    bilateral_sigma_rgb: float = 10.0,
    bilateral_weight: float = 5.0,
    window: int = 7,
) -> torch.Tensor:
    """Refine per-pixel class probabilities with a fully connected CRF.

    Args:
        probabilities: ``(C, H, W)`` class probabilities (softmax output; for a
            binary model stack ``[1 - p, p]``), on any device.
        image: ``(H, W, 3)`` uint8 RGB image the probabilities belong to.
        iterations: mean-field iterations (5 as in DeepLab; 0 returns the input).
        spatial_sigma: smoothness kernel width in pixels.
        spatial_weight: smoothness kernel weight.
        bilateral_sigma_xy: appearance kernel width in pixels.
        bilateral_sigma_rgb: appearance kernel colour width (0-255 scale).
        bilateral_weight: appearance kernel weight.
        window: samples per side of the appearance kernel's dilated window (odd, >= 3).

    Returns:
        ``(C, H, W)`` float32 probabilities (summing to 1 per pixel) on the
        device of ``probabilities``.

    Raises:
        ValueError: shapes that do not match or parameters out of range.
    """
    probabilities = torch.as_tensor(probabilities)
    colours = _image_tensor(image, probabilities)
    _check(probabilities, colours, iterations, window, spatial_sigma, bilateral_sigma_xy, bilateral_sigma_rgb)
    probabilities = probabilities.float()
    unary = probabilities.clamp_min(1e-8).log()
    q = torch.softmax(unary, dim=0)
    for _ in range(iterations):
        message = spatial_weight * _smoothness_message(q, spatial_sigma)
        message += bilateral_weight * _appearance_message(q, colours, bilateral_sigma_xy, bilateral_sigma_rgb, window)
        q = torch.softmax(unary + message, dim=0)
    return q


def _image_tensor(image: torch.Tensor | np.ndarray, probabilities: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` float colours on the probabilities' device."""
    colours = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image)
    if colours.ndim != 3 or colours.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {tuple(colours.shape)}")
    return colours.to(probabilities.device).permute(2, 0, 1).float()


def _check(
    probabilities: torch.Tensor, colours: torch.Tensor, iterations: int, window: int, *sigmas: float
) -> None:
    if probabilities.ndim != 3:
        raise ValueError(f"probabilities must be (C, H, W), got shape {tuple(probabilities.shape)}")
    if probabilities.shape[1:] != colours.shape[1:]:
        raise ValueError(
            f"probabilities {tuple(probabilities.shape[1:])} and image {tuple(colours.shape[1:])} sizes differ"
        )
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd number >= 3, got {window}")
    if min(sigmas) <= 0:
        raise ValueError(f"kernel widths must be positive, got {sigmas}")


def _gaussian_filter(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Unnormalised separable Gaussian (centre weight 1) over ``(C, H, W)``, zero outside the image."""
    channels, height, width = x.shape
    radius = min(math.ceil(3 * sigma), max(height, width))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    columns = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(x[None], rows, padding=(0, radius), groups=channels)
    return F.conv2d(x, columns, padding=(radius, 0), groups=channels)[0]


def _smoothness_message(q: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised Gaussian-weighted average of ``q`` over all other pixels (exact, separable)."""
    support = _gaussian_filter(torch.cat([q, torch.ones_like(q[:1])]), sigma)
    return (support[:-1] - q) / (support[-1:] - 1).clamp_min(1e-6)


def sample_offsets(sigma_xy: float, window: int) -> list[tuple[int, int, int]]:
    """``(dy, dx, area)`` samples of the appearance kernel: a dense window, then dilated rings.

    Level 0 is the ``window`` x ``window`` neighbourhood; level ``k`` adds the
    points of the same window spaced ``2**k`` apart that lie outside level
    ``k - 1``, each standing for ``4**k`` pixels, until the window reaches
    two ``sigma_xy``. Near neighbours are all visited (small objects keep
    their support) and far ones are sampled sparsely.
    """
    radius = window // 2
    samples = [(dy, dx, 1) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if dy or dx]
    step = 1
    while radius * step < 2 * sigma_xy:
        step *= 2
        inner = radius * step // 2
        samples += [
            (dy * step, dx * step, step * step)
            for dy in range(-radius, radius + 1)
            for dx in range(-radius, radius + 1)
            if max(abs(dy), abs(dx)) * step > inner
        ]
    return samples


def _appearance_message(
    q: torch.Tensor, colours: torch.Tensor, sigma_xy: float, sigma_rgb: float, window: int
) -> torch.Tensor:
    """Normalised bilateral-weighted average of ``q`` over the sampled neighbours (see :func:`sample_offsets`)."""
    _, height, width = q.shape
    samples = [(dy, dx, area) for dy, dx, area in sample_offsets(sigma_xy, window) if abs(dy) < height and abs(dx) < width]
    reach = max(max(abs(dy), abs(dx)) for dy, dx, _ in samples)
    pad = (reach, reach, reach, reach)
    padded_q = F.pad(q, pad)
    padded_colours = F.pad(colours, pad)
    padded_valid = F.pad(torch.ones_like(q[:1]), pad)
    message = torch.zeros_like(q)
    norm = torch.zeros_like(q[:1])
    for dy, dx, area in samples:
        rows = slice(reach + dy, reach + dy + height)
        columns = slice(reach + dx, reach + dx + width)
        colour_distance = (padded_colours[:, rows, columns] - colours).square().sum(0, keepdim=True)
        spatial = math.log(area) - (dy * dy + dx * dx) / (2 * sigma_xy**2)
        weight = padded_valid[:, rows, columns] * torch.exp(spatial - colour_distance / (2 * sigma_rgb**2))
        message += weight * padded_q[:, rows, columns]
        norm += weight
    return message / norm.clamp_min(1e-6)
