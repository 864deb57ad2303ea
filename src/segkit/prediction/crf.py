"""Fully connected CRF post-processing (Krähenbühl & Koltun, NeurIPS 2011), as DeepLab v1/v2 used it.

Written in PyTorch because the usual implementation (pydensecrf, C++) is
unmaintained, CPU-only and hard to install; this runs on CPU and GPU with
plain tensor operations.

Model: the energy of a labelling ``x`` is ``sum_i U_i(x_i) + sum_{i<j}
mu(x_i, x_j) k(f_i, f_j)`` with unary ``U_i = -log P_i`` (the network's
probabilities), Potts compatibility ``mu = [x_i != x_j]`` and two Gaussian
kernels over pixel positions ``p`` and colours ``I``::

    k(i, j) = w_s exp(-|p_i - p_j|^2 / 2 s^2)                                 (smoothness)
            + w_b exp(-|p_i - p_j|^2 / 2 s_xy^2 - |I_i - I_j|^2 / 2 s_rgb^2)   (appearance)

Mean-field inference iterates ``Q(l) = softmax_l(-U(l) + sum_m w_m (K_m Q)(l))``:
with Potts compatibility each label gains the kernel-weighted support of the
same label around the pixel. Each kernel is normalised symmetrically,
``D^-1/2 K D^-1/2`` with ``D = K 1`` (the reference implementation's
default), so the weights compare with the unary's scale.

Approximation (exact message passing is O(N^2) in the number of pixels): the
smoothness kernel is computed exactly as a separable Gaussian filter; the
appearance kernel, a Gaussian in the 5-D space (x, y, r, g, b), is filtered
on the permutohedral lattice (Adams, Baek & Davis 2010) -- the approximation
the CRF paper itself uses -- in O(N) per iteration, the lattice being built
once per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
) -> torch.Tensor:
    """Refine per-pixel class probabilities with a fully connected CRF.

    Args:
        probabilities: ``(C, H, W)`` class probabilities (softmax output; for a
            binary model stack ``[1 - p, p]``), on any device.
        image: ``(H, W, 3)`` uint8 RGB image the probabilities belong to.
        iterations: mean-field iterations (5 as in DeepLab; 0 returns the input, renormalised).
        spatial_sigma: smoothness kernel width in pixels.
        spatial_weight: smoothness kernel weight.
        bilateral_sigma_xy: appearance kernel width in pixels.
        bilateral_sigma_rgb: appearance kernel colour width (0-255 scale).
        bilateral_weight: appearance kernel weight.

    Returns:
        ``(C, H, W)`` float32 probabilities (summing to 1 per pixel) on the
        device of ``probabilities``.

    Raises:
        ValueError: shapes that do not match or parameters out of range.
    """
    probabilities = torch.as_tensor(probabilities)
    colours = _image_tensor(image, probabilities)
    _check(probabilities, colours, iterations, spatial_sigma, bilateral_sigma_xy, bilateral_sigma_rgb)
    unary = probabilities.float().clamp_min(1e-8).log()
    q = torch.softmax(unary, dim=0)
    if iterations == 0:
        return q
    smoothness = _Normalised(lambda x: _gaussian_filter(x, spatial_sigma), q[:1])
    lattice = PermutohedralLattice(_bilateral_features(colours, bilateral_sigma_xy, bilateral_sigma_rgb))
    appearance = _Normalised(lambda x: lattice.filter(x.flatten(1)).view_as(x), q[:1])
    for _ in range(iterations):
        message = spatial_weight * smoothness(q) + bilateral_weight * appearance(q)
        q = torch.softmax(unary + message, dim=0)
    return q


class _Normalised:
    """A filter ``K`` over ``(C, H, W)`` maps, applied as ``D^-1/2 K D^-1/2`` with ``D = K 1``."""

    def __init__(self, kernel: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor) -> None:
        self.kernel = kernel
        self.scale = kernel(torch.ones_like(like)).clamp_min(1e-20).rsqrt()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.kernel(self.scale * x)


def _image_tensor(image: torch.Tensor | np.ndarray, probabilities: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` float colours on the probabilities' device."""
    colours = torch.as_tensor(np.array(image) if isinstance(image, np.ndarray) else image)  # a writable copy
    if colours.ndim != 3 or colours.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {tuple(colours.shape)}")
    return colours.to(probabilities.device).permute(2, 0, 1).float()


def _check(probabilities: torch.Tensor, colours: torch.Tensor, iterations: int, *sigmas: float) -> None:
    if probabilities.ndim != 3:
        raise ValueError(f"probabilities must be (C, H, W), got shape {tuple(probabilities.shape)}")
    if probabilities.shape[1:] != colours.shape[1:]:
        raise ValueError(
            f"probabilities {tuple(probabilities.shape[1:])} and image {tuple(colours.shape[1:])} sizes differ"
        )
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if min(sigmas) <= 0:
        raise ValueError(f"kernel widths must be positive, got {sigmas}")


def _bilateral_features(colours: torch.Tensor, sigma_xy: float, sigma_rgb: float) -> torch.Tensor:
    """``(H*W, 5)`` features ``(x / s_xy, y / s_xy, r / s_rgb, g / s_rgb, b / s_rgb)``."""
    _, height, width = colours.shape
    rows, columns = torch.meshgrid(
        torch.arange(height, device=colours.device), torch.arange(width, device=colours.device), indexing="ij"
    )
    positions = torch.stack([columns, rows]).float() / sigma_xy
    return torch.cat([positions, colours / sigma_rgb]).flatten(1).T


def _gaussian_filter(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable ``exp(-d^2 / 2 sigma^2)`` filter (centre weight 1) over ``(C, H, W)``, zero outside the image."""
    channels, height, width = x.shape
    radius = min(math.ceil(3 * sigma), max(height, width))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    columns = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(x[None], rows, padding=(0, radius), groups=channels)
    return F.conv2d(x, columns, padding=(radius, 0), groups=channels)[0]


class PermutohedralLattice:
    """Gaussian filtering in a ``d``-dimensional feature space on the permutohedral lattice.

    Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the
    Permutohedral Lattice", Eurographics 2010 -- the approximation of the
    fully connected CRF paper. Every point is splatted onto the ``d + 1``
    vertices of its enclosing simplex (barycentric weights), the lattice
    values are blurred with ``[1 2 1] / 2`` along each of the ``d + 1``
    lattice directions, and sliced back. The cost is O(N d^2 C) for N points
    and C channels instead of O(N^2 C); the lattice is built once per image
    (vertices found by sorting integer keys) and reused by every iteration.

    Args:
        features: ``(N, d)`` point features already divided by the kernel widths,
            so the filter approximates ``sum_j exp(-|f_i - f_j|^2 / 2) v_j``.
    """

    def __init__(self, features: torch.Tensor) -> None:
        points, d = features.shape
        device = features.device
        index = torch.arange(1, d + 1, device=device, dtype=torch.float64)[:, None]
        scaled = features.T.double() * (math.sqrt(2 / 3) * (d + 1) / torch.sqrt(index * (index + 1)))  # (d, N)
        # Elevate onto the hyperplane sum(x) = 0 of R^(d+1): y = E f (p. 5 of the paper).
        suffix = scaled.flip(0).cumsum(0).flip(0)
        elevated = torch.cat([suffix[:1], F.pad(suffix[1:], (0, 0, 0, 1)) - index * scaled])  # (d + 1, N)
        # The nearest remainder-0 lattice point, then the simplex containing the point.
        rounded = torch.round(elevated / (d + 1))
        rem0 = rounded * (d + 1)
        order = torch.sort(elevated - rem0, dim=0, descending=True, stable=True).indices
        positions = torch.arange(d + 1, device=device)[:, None].expand(-1, points)
        rank = torch.empty_like(order).scatter_(0, order, positions) + rounded.sum(0).long()
        wrap = (rank < 0).long() - (rank > d).long()
        rank += (d + 1) * wrap
        rem0 += (d + 1) * wrap
        # Barycentric coordinates of the point in its simplex (p. 10).
        delta = (elevated - rem0) / (d + 1)
        barycentric = torch.zeros(d + 2, points, dtype=torch.float64, device=device)
        barycentric.scatter_add_(0, d - rank, delta).scatter_add_(0, d - rank + 1, -delta)
        barycentric[0] += 1 + barycentric[d + 1]
        self.weights = barycentric[: d + 1].float()  # (d + 1, N): one row per simplex vertex
        # The simplex's vertices: integer keys (first d coordinates), made unique by sorting their codes.
        remainder = torch.arange(d + 1, device=device)[:, None, None]
        keys = rem0[None, :d].long() + remainder - (d + 1) * (rank[None, :d] > d - remainder).long()  # (d+1, d, N)
        keys = keys.transpose(0, 1).reshape(d, -1)  # (d, (d + 1) * N), vertex-major
        self._encode = _KeyEncoder(keys, margin=d + 1)
        codes, inverse = torch.unique(self._encode(keys), return_inverse=True)
        self.vertices = inverse.view(d + 1, points)
        self.size = len(codes)
        vertex_keys = keys.new_zeros(d, self.size).index_copy_(1, inverse, keys)
        self.neighbours = [self._neighbour_pair(codes, vertex_keys, axis) for axis in range(d + 1)]

    def _neighbour_pair(self, codes: torch.Tensor, keys: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of each vertex's two neighbours along lattice direction ``axis`` (``len(codes)`` if absent)."""
        d = len(keys)
        step = torch.ones(d, 1, dtype=torch.long, device=keys.device)
        if axis < d:
            step[axis] = -d
        return self._lookup(codes, keys + step), self._lookup(codes, keys - step)

    def _lookup(self, codes: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        wanted = self._encode(keys)
        found = torch.searchsorted(codes, wanted).clamp_max(len(codes) - 1)
        return torch.where(codes[found] == wanted, found, len(codes))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Splat ``(C, N)`` values, blur along every lattice direction, slice back to ``(C, N)``."""
        d = len(self.weights) - 1
        lattice = values.new_zeros(len(values), self.size + 1)  # the last column stands for absent vertices
        for vertices, weights in zip(self.vertices, self.weights):
            lattice.index_add_(1, vertices, values * weights)
        for first, second in self.neighbours:
            lattice[:, :-1] += 0.5 * (lattice[:, first] + lattice[:, second])
        out = torch.zeros_like(values)
        for vertices, weights in zip(self.vertices, self.weights):
            out += weights * lattice[:, vertices]
        return out / (1 + 2.0**-d)


class _KeyEncoder:
    """Maps ``(d, K)`` integer lattice keys (and neighbours up to ``margin`` away) to unique int64 codes."""

    def __init__(self, keys: torch.Tensor, margin: int) -> None:
        self.low = keys.min(1).values - margin
        spans = (keys.max(1).values + margin + 1 - self.low).tolist()
        self.strides = [math.prod(spans[:axis]) for axis in range(len(spans))]
        if math.prod(spans) >= 2**62:
            raise ValueError("image too large for these kernel widths (lattice keys overflow 64 bits)")

    def __call__(self, keys: torch.Tensor) -> torch.Tensor:
        codes = torch.zeros_like(keys[0])
        for key, low, stride in zip(keys, self.low.tolist(), self.strides):
            codes += (key - low) * stride
        return codes
