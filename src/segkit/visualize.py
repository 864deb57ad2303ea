"""Colour masks and overlays with one fixed palette used everywhere in segkit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def make_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC bit-interleaved palette (as labelme uses), with 255 white.

    Class 0 is black, classes 1..n get distinct colours, and the ignore value
    255 is white so it never looks like a class. Returns ``(num_colors, 3)`` uint8.
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    if num_colors > 255:
        palette[255] = (255, 255, 255)
    return palette


PALETTE: np.ndarray = make_palette()


def default_palette(classes: Sequence[str]) -> np.ndarray:
    """``(len(classes), 3)`` uint8 colours for classes without colours of their own.

    The VOC palette by index, except that class 0 is black only when it is a background
    class (:func:`segkit.data.classes.background_index`); otherwise it gets the first VOC
    colour no other class uses, so a real class is never drawn as "nothing".
    """
    from segkit.data.classes import is_background_name

    colours = PALETTE[: max(len(classes), 1)].copy()
    if classes and not is_background_name(classes[0]):
        colours[0] = PALETTE[len(classes)]
    return colours


def colorize(mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Map an ``(H, W)`` index mask to an ``(H, W, 3)`` uint8 RGB image."""
    table = PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    if len(table) < 256:  # pad a class palette so any uint8 value maps to a colour
        table = np.concatenate([table, PALETTE[len(table):]])
    return table[np.asarray(mask, dtype=np.uint8)]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
    background: int | None = 0,
) -> np.ndarray:
    """Blend a colour mask onto an RGB image; pixels of the ``background`` class (if any) stay as they are."""
    rgb = np.asarray(image, dtype=np.float32)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    colour = colorize(mask, palette).astype(np.float32)
    coloured = np.ones(np.shape(mask), bool) if background is None else np.asarray(mask) != background
    blended = np.where(coloured[..., None], (1 - alpha) * rgb + alpha * colour, rgb)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
