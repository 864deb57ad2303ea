"""Reading and writing image and mask files, with errors that name the file."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segkit.errors import SegkitError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# Refuse images whose pixel count would exhaust memory (decompression bombs).
MAX_IMAGE_PIXELS = 20_000 * 20_000


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file, turning every failure into a SegkitError."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise SegkitError(path, "file is empty (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            try:
                _check_size(path, image)
                image.load()
            except BaseException:  # a refused or undecodable image must not keep its file open
                image.close()
                raise
    except SegkitError:
        raise
    except FileNotFoundError:
        raise SegkitError(path, "file not found") from None
    except IsADirectoryError:
        raise SegkitError(path, "is a folder, not an image file") from None
    except PermissionError:
        raise SegkitError(path, "permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise SegkitError(path, f"image too large, refused as a possible decompression bomb ({error})") from None
    except UnidentifiedImageError as error:
        raise SegkitError(path, f"not a readable image ({error.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise SegkitError(path, f"corrupt or truncated image ({error})") from None
    return image


def _check_size(path: Path, image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise SegkitError(path, f"image too large ({width}x{height} pixels)")


def to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any PIL image (L, LA, P, RGBA, CMYK, I;16, F ...) to ``(H, W, 3)`` uint8 RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return np.repeat(scaled.round().astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB with its EXIF orientation applied."""
    image = open_image(path)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not make the pixels unreadable
        pass
    return to_rgb(image)


def read_mask_file(path: str | Path) -> tuple[np.ndarray, str]:
    """Read a mask file as stored, returning the array and the PIL mode.

    L/P/I;16 masks come back as ``(H, W)`` integer arrays (palette indices for P),
    RGB/RGBA masks as ``(H, W, 3)`` uint8. No EXIF rotation: masks are pixel data.
    """
    image = open_image(path)
    mode = image.mode
    if mode in ("RGB", "RGBA", "CMYK", "LA", "PA"):
        if mode == "LA":
            return np.asarray(image.getchannel(0)), "L"
        return np.asarray(image.convert("RGB"), dtype=np.uint8), "RGB"
    if mode == "1":
        return np.asarray(image, dtype=np.uint8), "1"
    array = np.asarray(image)
    if mode.startswith("I") or mode == "F":
        array = array.astype(np.int64)
    return array, mode


def atomic_write(path: str | Path, write) -> None:
    """Write a file through ``write(temp_path)`` then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(Path(temp))
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp creates files private to the user
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def make_staging_dir(out: Path, prefix: str) -> Path:
    """A temporary folder beside ``out`` (same file system, so it can be renamed into place)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=prefix))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); it may become `out` itself
    return staging


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_mask(path: str | Path, mask: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write a uint8 index mask as PNG: palette mode when a palette is given, else L."""
    array = np.asarray(mask)
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise SegkitError(path, "mask values do not fit in uint8")
        array = array.astype(np.uint8)
    image = Image.fromarray(array)
    if palette is not None:  # putpalette turns the L image into P without touching the indices
        image.putpalette(np.asarray(palette, dtype=np.uint8)[:256].reshape(-1).tolist())
    atomic_write(path, lambda temp: image.save(temp, format="PNG"))


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB uint8 array; format from the file suffix."""
    pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    atomic_write(path, lambda temp: pil.save(temp, format=fmt))
