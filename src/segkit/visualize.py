"""Colour masks and overlays with one fixed palette used everywhere in segkit."""

from __future__ import annotations

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
) -> np.ndarray:
    """Blend a colour mask onto an RGB image; background (0) pixels stay as they are."""
    rgb = np.asarray(image, dtype=np.float32)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    colour = colorize(mask, palette).astype(np.float32)
    blended = np.where((np.asarray(mask) > 0)[..., None], (1 - alpha) * rgb + alpha * colour, rgb)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
