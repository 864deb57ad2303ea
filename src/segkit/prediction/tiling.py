"""Sliding-window (tiled) prediction: bounded memory for images larger than the network input.

An image is cut into overlapping ``tile`` windows (in the image's own pixels).
Each window goes through the checkpoint's preprocessing as if it were a whole
image (so for ``letterbox``/``resize`` it is resized to ``img_size``; for
``crop`` it stays at native resolution), its class probabilities are mapped back
to the window's pixels, and the windows are blended with a Gaussian weight that
falls off towards the window edges, where a network sees the least context:

    P(y, x) = sum_k g(y - top_k, x - left_k) * p_k(y - top_k, x - left_k) / sum_k g(...)

``g`` is the nnU-Net / MONAI importance map (``sliding_window_inference(mode=
"gaussian", sigma_scale=0.125)``): a separable Gaussian with sigma = tile / 8.
It is written here rather than taken from MONAI because MONAI is a large extra
dependency for some 60 lines, and its sliding window runs on tensors already in
network space, while segkit windows must go through the checkpoint's resize
policy one by one. Because the windows lie on a grid and ``g`` is separable,
the weight sum is separable too and is kept as two vectors; the only
image-sized buffer is the ``(C, H, W)`` float32 probability sum (on the
backend's device, so a GPU never copies probabilities to the host), and at most
``batch_size`` windows exist at a time, whatever the overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from segkit.data.transforms import PreprocessConfig, compute_geometry
from segkit.errors import SegkitError
from segkit.prediction.arrays import Array, array_ops

# Gaussian sigma as a fraction of the window side (nnU-Net and MONAI use 1/8).
SIGMA_SCALE = 0.125
# Automatic tiling of ``crop`` checkpoints: windows of this many training crops per side. Large
# windows waste little on overlaps (a 2149 x 1480 image at 384 px crops: 2 windows of 1536 px
# instead of 12 of 768 px, 4.7 instead of 7.1 megapixels computed) and give the network context.
AUTO_TILE_FACTOR = 4
MAX_WINDOW_SIDE = 4096  # automatic windows are at most this many network pixels per side (the crop, if larger)
# ... and at most this many training crops' pixels per forward pass (the memory bound of tiling).
AUTO_TILE_CROPS_PER_PASS = 16
# Every model's stride divides this many pixels: planned input sides are multiples of it, and window
# offsets too, so each window sees the pooling grid the whole image would (a U-Net is shift-equivariant
# only in steps of its stride).
GRID = 32
BYTES_PER_FLOAT = 4

# Windows (uint8 RGB, all of one size) -> ``(C, h, w)`` probabilities at each window's size.
WindowPredictor = Callable[[list[np.ndarray]], Sequence[Array]]


@dataclass(frozen=True)
class TileConfig:
    """When and how a :class:`~segkit.prediction.predictor.Predictor` predicts window by window.

    Attributes:
        size: window ``(height, width)`` in original image pixels: every image is then
            tiled (padded first when smaller than a window). ``None``: see ``auto``.
        auto: with ``size=None``, tile ``crop`` checkpoints' images that are larger than
            ``AUTO_TILE_FACTOR * img_size`` (with windows of that size, one per pass); never tile
            ``letterbox``/``resize`` ones. ``False`` with ``size=None``: never tile.
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
        batch_size: windows per forward pass (automatic windows: at most
            ``AUTO_TILE_CROPS_PER_PASS`` training crops' pixels per pass).
    """

    size: tuple[int, int] | None = None
    auto: bool = True
    overlap: float = 0.25
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.size is not None:
            size = tuple(self.size)
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
                raise SegkitError(None, f"tile size must be two positive integers, got {self.size!r}")
            object.__setattr__(self, "size", size)
        if not 0.0 <= self.overlap < 1.0:
            raise SegkitError(None, f"tile overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise SegkitError(None, f"tile batch size must be at least 1, got {self.batch_size}")

    def window_size(self, preprocess: PreprocessConfig) -> tuple[int, int] | None:
        """The window images are tiled in, in original pixels: the size given, or the automatic one of crop cards."""
        if self.size is not None:
            return self.size
        if not self.auto or preprocess.resize != "crop":
            return None
        # AUTO_TILE_FACTOR crops per side at the network's scale (at most MAX_WINDOW_SIDE), in original pixels
        window_h, window_w = (
            math.ceil(max(side, min(side * AUTO_TILE_FACTOR, MAX_WINDOW_SIDE)) / preprocess.scale)
            for side in preprocess.img_size
        )
        return window_h, window_w

    def window_for(self, height: int, width: int, preprocess: PreprocessConfig) -> tuple[int, int] | None:
        """The window size for an ``height x width`` image, or ``None`` to predict it whole."""
        window = self.window_size(preprocess)
        if window is None or self.size is not None:
            return window
        return window if height > window[0] or width > window[1] else None

    def batch_for(self) -> int:
        """Windows per pass: ``batch_size``, fewer for automatic windows (bounded memory)."""
        if self.size is not None:
            return self.batch_size
        return max(1, min(self.batch_size, AUTO_TILE_CROPS_PER_PASS // AUTO_TILE_FACTOR**2))

    def plan(self, height: int, width: int, preprocess: PreprocessConfig) -> TilePlan | None:
        """The windows an ``height x width`` image is predicted in; ``None``: predicted whole."""
        window = self.window_for(height, width, preprocess)
        if window is None:
            return None
        return TilePlan.create(height, width, window, self.overlap, self.batch_for(), align=grid_in_pixels(preprocess))

    def network_pixels(self, height: int, width: int, preprocess: PreprocessConfig) -> int:
        """Pixels the network computes to predict an ``height x width`` image: its windows', or the whole image's,
        each at network size. Prediction time follows them (not the image's own pixels: a letterboxed image
        costs the same at any size, tiled windows overlap and pad)."""
        plan = self.plan(height, width, preprocess)
        windows, (piece_h, piece_w) = (1, (height, width)) if plan is None else (len(plan.positions), plan.window)
        geometry = compute_geometry(piece_h, piece_w, preprocess.img_size, preprocess.resize, preprocess.scale)
        return windows * geometry.out_h * geometry.out_w


def grid_in_pixels(preprocess: PreprocessConfig) -> int:
    """The network's pooling grid in image pixels, for windows that keep to it (1: windows are resized)."""
    if preprocess.resize != "crop":
        return 1
    grid = GRID / preprocess.scale
    return int(grid) if grid.is_integer() else 1


def window_starts(length: int, window: int, stride: int, align: int = 1) -> list[int]:
    """Offsets of windows covering ``[0, length)``: the first at 0, the last flush with the end.

    ``ceil((length - window) / stride) + 1`` windows, spread evenly (as nnU-Net
    does), so the step between neighbours is at most ``stride`` and every
    overlap is at least ``window - stride``. A length up to one window gets one.
    Offsets are multiples of ``align``, which must divide ``length - window``; steps
    are then at most ``stride`` rounded down to ``align`` (but at least ``align``).
    """
    if length <= window:
        return [0]
    units, step_units = (length - window) // align, max(1, stride // align)
    count = math.ceil(units / step_units) + 1
    return [align * round(index * units / (count - 1)) for index in range(count)]


def gaussian_weights(length: int) -> np.ndarray:
    """1-D float32 Gaussian window of ``length`` samples, sigma ``SIGMA_SCALE * length``, peak 1 at the centre.

    Its smallest value (at the ends) is ``exp(-8)``, so every pixel gets a positive weight.
    """
    positions = np.arange(length, dtype=np.float32) - (length - 1) / 2
    return np.exp(-0.5 * (positions / (SIGMA_SCALE * length)) ** 2).astype(np.float32)


@dataclass(frozen=True)
class TilePlan:
    """Window positions for one image, and the memory the blending needs.

    Attributes:
        height, width: the image size.
        window: window ``(height, width)``.
        tops, lefts: window offsets; the windows are every ``(top, left)`` pair.
        batch_size: windows per forward pass.
    """

    height: int
    width: int
    window: tuple[int, int]
    tops: list[int]
    lefts: list[int]
    batch_size: int

    @classmethod
    def create(
        cls, height: int, width: int, window: tuple[int, int], overlap: float, batch_size: int, align: int = 1
    ) -> TilePlan:
        """Windows over an ``height x width`` image; offsets are multiples of ``align`` when it divides the window
        (the image is then padded at the bottom/right to a multiple of ``align``)."""
        if window[0] % align or window[1] % align:
            align = 1
        strides = [max(1, math.floor(side * (1.0 - overlap))) for side in window]
        padded_h = max(-(-height // align) * align, window[0])
        padded_w = max(-(-width // align) * align, window[1])
        tops = window_starts(padded_h, window[0], strides[0], align)
        lefts = window_starts(padded_w, window[1], strides[1], align)
        return cls(height, width, (window[0], window[1]), tops, lefts, batch_size)

    @property
    def padded_size(self) -> tuple[int, int]:
        """The image size after padding it to where the last windows end."""
        return self.tops[-1] + self.window[0], self.lefts[-1] + self.window[1]

    @property
    def positions(self) -> list[tuple[int, int]]:
        return [(top, left) for top in self.tops for left in self.lefts]

    def buffer_bytes(self, num_classes: int) -> int:
        """Bytes of the blending buffers: ``(C, H', W')`` float32 sums plus the two weight vectors."""
        padded_h, padded_w = self.padded_size
        return BYTES_PER_FLOAT * (num_classes * padded_h * padded_w + padded_h + padded_w)

    def batch_bytes(self, num_classes: int, channels: int = 3) -> int:
        """Bytes of one batch of windows at window size: uint8 pixels plus float32 probabilities."""
        pixels = self.batch_size * self.window[0] * self.window[1]
        return pixels * (channels + BYTES_PER_FLOAT * num_classes)


class BlendBuffer:
    """Gaussian-weighted sum of window probabilities over a padded image, where the probabilities are.

    Args:
        plan: the windows that will be added.
        like: the first window's probabilities: the buffer is made with their library, on their device.
    """

    def __init__(self, plan: TilePlan, like: Array) -> None:
        self.plan = plan
        self.ops = array_ops(like)
        padded_h, padded_w = plan.padded_size
        self.sums = self.ops.zeros((like.shape[0], padded_h, padded_w), like)
        rows, cols = gaussian_weights(plan.window[0]), gaussian_weights(plan.window[1])
        row_weights, col_weights = np.zeros(padded_h, np.float32), np.zeros(padded_w, np.float32)
        for top in plan.tops:
            row_weights[top : top + plan.window[0]] += rows
        for left in plan.lefts:
            col_weights[left : left + plan.window[1]] += cols
        self.window_weights = self.ops.asarray(rows[:, None] * cols[None, :], like)
        self.row_weights = self.ops.asarray(row_weights, like)
        self.col_weights = self.ops.asarray(col_weights, like)

    @property
    def nbytes(self) -> int:
        return BYTES_PER_FLOAT * sum(
            int(np.prod(array.shape)) for array in (self.sums, self.row_weights, self.col_weights)
        )

    def add(self, probabilities: Array, top: int, left: int) -> None:
        """Add one window's ``(C, h, w)`` probabilities at ``(top, left)``."""
        height, width = self.plan.window
        self.sums[:, top : top + height, left : left + width] += probabilities * self.window_weights

    def result(self) -> Array:
        """The blended ``(C, H, W)`` probabilities at the image's size (divides the sums in place)."""
        self.sums /= self.row_weights.reshape(1, -1, 1)
        self.sums /= self.col_weights.reshape(1, 1, -1)
        return self.sums[:, : self.plan.height, : self.plan.width]


def pad_to_size(image: np.ndarray, size: tuple[int, int], fill: int | Sequence[int]) -> np.ndarray:
    """Pad an ``(H, W, 3)`` image at the bottom/right with ``fill`` to at least ``size``."""
    bottom, right = max(0, size[0] - image.shape[0]), max(0, size[1] - image.shape[1])
    if not bottom and not right:
        return image
    value = (fill,) * image.shape[2] if isinstance(fill, int) else tuple(fill)
    return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=value)


def predict_tiled(image: np.ndarray, predict: WindowPredictor, plan: TilePlan, fill: int | Sequence[int] = 0) -> Array:
    """Blend window predictions into ``(C, H, W)`` float32 probabilities at the image's size.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, ``H x W`` as in ``plan``.
        predict: windows -> ``(C, h, w)`` probabilities at window size (numpy arrays, or
            tensors on any device: the result is made where they are).
        plan: window positions, from :meth:`TilePlan.create`.
        fill: pixel value (or RGB) of the padding (images smaller than a window, or than the aligned windows).
    """
    if image.shape[:2] != (plan.height, plan.width):
        raise ValueError(f"image is {image.shape[:2]}, the plan is for {(plan.height, plan.width)}")
    padded = pad_to_size(image, plan.padded_size, fill)
    height, width = plan.window
    positions = plan.positions
    buffer: BlendBuffer | None = None
    for start in range(0, len(positions), plan.batch_size):
        chunk = positions[start : start + plan.batch_size]
        windows = [np.ascontiguousarray(padded[top : top + height, left : left + width]) for top, left in chunk]
        for (top, left), probabilities in zip(chunk, predict(windows)):
            if buffer is None:
                buffer = BlendBuffer(plan, probabilities)
            buffer.add(probabilities, top, left)
    assert buffer is not None  # a plan has at least one window
    return buffer.result()
