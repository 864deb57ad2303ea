"""Colour masks, overlays, legends and labelled image grids: how segkit draws, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont


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
        table = np.concatenate([table, PALETTE[len(table) :]])
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


# ----------------------------------------------------------------- figures
# Every figure segkit draws (sample grids, contact sheets, legends, the HTML report's
# thumbnails) uses this canvas colour for gaps and padding: a light grey that is
# neither class 0's black nor the ignore value's white.
PAD_COLOR: tuple[int, int, int] = (228, 228, 228)
TEXT_COLOR: tuple[int, int, int] = (20, 20, 20)
IGNORE_NAME = "ignore"


def font(size: int = 13) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font at ``size`` pixels (no system fonts needed)."""
    return _font(size)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_width(text: str, size: int = 13) -> int:
    """Width in pixels of ``text`` drawn with :func:`font`."""
    return int(np.ceil(font(size).getlength(text)))


def legend(
    classes: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]],
    *,
    width: int | None = None,
    ignore: bool = False,
    size: int = 13,
) -> np.ndarray:
    """A legend image: one colour swatch and name per class, wrapped into rows to fit ``width``.

    Args:
        classes: class names in index order.
        palette: RGB colour per class (:func:`segkit.data.classes.default_palette` for classes without their own).
        width: image width in pixels (default: everything on one row).
        ignore: add a white swatch named ``ignore`` for the ignore value.
        size: text height in pixels.

    Returns:
        ``(H, W, 3)`` uint8 RGB on :data:`PAD_COLOR`.
    """
    colours = np.asarray(palette, dtype=np.uint8)
    entries = [(name, tuple(int(v) for v in colours[index])) for index, name in enumerate(classes)]
    if ignore:
        entries.append((IGNORE_NAME, tuple(int(v) for v in PALETTE[255])))
    # Swatches and names laid out in rows: PIL draws them; no library does this small layout.
    swatch, gap, margin = size, size // 2 + 4, 6
    widths = [swatch + 5 + text_width(name, size) for name, _ in entries]
    limit = max(width - 2 * margin, max(widths)) if width else sum(widths) + gap * len(widths)
    rows: list[list[int]] = [[]]
    used = 0
    for index, item_width in enumerate(widths):
        if rows[-1] and used + item_width > limit:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += item_width + gap
    line = size + 8
    total_width = width or (max(sum(widths[i] + gap for i in row) for row in rows) - gap + 2 * margin)
    canvas = Image.new("RGB", (total_width, len(rows) * line + 2 * margin - 4), PAD_COLOR)
    draw = ImageDraw.Draw(canvas)
    for row_number, row in enumerate(rows):
        x, y = margin, margin + row_number * line
        for index in row:
            name, colour = entries[index]
            draw.rectangle([x, y + 1, x + swatch - 1, y + swatch], fill=colour, outline=(90, 90, 90))
            draw.text((x + swatch + 5, y), name, fill=TEXT_COLOR, font=font(size))
            x += widths[index] + gap
    return np.asarray(canvas)


def fit_within(image: np.ndarray, max_side: int, nearest: bool = False) -> np.ndarray:
    """Shrink an RGB image or index mask so that its longer side is at most ``max_side`` (never enlarged)."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BOX
    return np.asarray(Image.fromarray(image).resize(size, resample))


def labelled_grid(
    cells: Sequence[Sequence[np.ndarray]],
    *,
    column_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    title: str = "",
    footer: np.ndarray | None = None,
    gap: int = 8,
    center: bool = True,
) -> np.ndarray:
    """Lay out RGB images in rows and columns on :data:`PAD_COLOR`, with titles.

    Cells may differ in size: each column is as wide as its widest cell, each row as
    tall as its tallest, and every cell is centred in its box (or at its top left).

    Args:
        cells: rows of ``(H, W, 3)`` uint8 images (rows may have fewer cells).
        column_titles: a title above each column.
        row_titles: a caption above each row (e.g. the sample's name).
        title: a line above everything (e.g. ``"epoch 7"``).
        footer: an image below the grid (e.g. a :func:`legend`), left-aligned.
        gap: pixels between cells and around the grid.
        center: centre each cell in its box; else place it at the box's top left.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    columns = max(len(row) for row in cells)
    column_widths = [max((row[c].shape[1] for row in cells if c < len(row)), default=0) for c in range(columns)]
    title_size, caption_size = 15, 12
    title_height = title_size + gap if title else 0
    header_height = title_size + gap // 2 if column_titles else 0
    caption_height = caption_size + 4 if row_titles else 0
    row_heights = [max(cell.shape[0] for cell in row) for row in cells]
    grid_width = sum(column_widths) + gap * (columns + 1)
    width = max(grid_width, 0 if footer is None else footer.shape[1] + 2 * gap)
    height = gap + title_height + header_height + sum(h + caption_height + gap for h in row_heights)
    if footer is not None:
        height += footer.shape[0] + gap
    canvas = Image.new("RGB", (width, height), PAD_COLOR)
    draw = ImageDraw.Draw(canvas)
    y = gap
    if title:
        draw.text((gap, y), title, fill=TEXT_COLOR, font=font(title_size))
        y += title_height
    lefts = [gap + sum(column_widths[:c]) + gap * c for c in range(columns)]
    if column_titles:
        for left, column_width, name in zip(lefts, column_widths, column_titles):
            draw.text(
                (left + (column_width - text_width(name, title_size)) // 2, y),
                name,
                fill=TEXT_COLOR,
                font=font(title_size),
            )
        y += header_height
    for number, (row, row_height) in enumerate(zip(cells, row_heights)):
        if row_titles:
            draw.text((gap, y), row_titles[number], fill=TEXT_COLOR, font=font(caption_size))
            y += caption_height
        for left, column_width, cell in zip(lefts, column_widths, row):
            offset = ((column_width - cell.shape[1]) // 2, (row_height - cell.shape[0]) // 2) if center else (0, 0)
            canvas.paste(Image.fromarray(np.ascontiguousarray(cell)), (left + offset[0], y + offset[1]))
        y += row_height + gap
    if footer is not None:
        canvas.paste(Image.fromarray(footer), (gap, y))
    return np.asarray(canvas)
