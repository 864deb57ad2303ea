"""Reading and writing files, with errors that name the file.

Everything here turns what can go wrong with a file (missing, unreadable, not UTF-8,
too deep, a decompression bomb, a full or read-only disk, a folder where a file was
expected) into one :class:`~segkit.errors.SegkitError` line.
"""

from __future__ import annotations

import fnmatch
import glob
import io
import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segkit.errors import SegkitError
from segkit.files import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# Refuse images whose pixel count would exhaust memory (decompression bombs).
MAX_IMAGE_PIXELS = 20_000 * 20_000
ORIENTATION_TAG = 0x0112  # EXIF: values 5-8 turn the image by 90 degrees


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


# ----------------------------------------------------------------------------- text and JSON
def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SegkitError(path, "file not found") from None
    except IsADirectoryError:
        raise SegkitError(path, f"is a folder, not a {what}") from None
    except OSError as error:
        raise SegkitError(path, f"cannot read {what} ({error.strerror or error})") from None


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file (a byte-order mark is allowed); ``what`` names it in errors ("class list")."""
    path = Path(path)
    try:
        return _read_bytes(path, what).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SegkitError(path, f"{what} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file once (UTF-8/16/32, with or without BOM); every failure is one SegkitError."""
    path = Path(path)
    raw = _read_bytes(path, what)
    if not raw.strip():
        raise SegkitError(path, f"file is empty, not a {what}")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise SegkitError(path, f"not UTF-8 text, not a {what}") from None
    except json.JSONDecodeError as error:
        raise SegkitError(path, f"invalid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:  # json recurses once per nesting level
        raise SegkitError(path, f"JSON nested too deeply to be a {what}") from None


# --------------------------------------------------------------------------------- images
@contextmanager
def _image_errors(path: Path | str, what: str | None) -> Iterator[None]:
    """Turn every way Pillow can fail into a SegkitError naming ``path``.

    ``what`` names image data held inside ``path`` (``"imageData"`` of a JSON file);
    None when ``path`` is the image file itself.
    """
    subject = what or "image"
    unreadable = f"{what} is not a readable image" if what else "not a readable image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except SegkitError:
        raise
    except FileNotFoundError:
        raise SegkitError(path, "file not found") from None
    except IsADirectoryError:
        raise SegkitError(path, "is a folder, not an image file") from None
    except PermissionError:
        raise SegkitError(path, "permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise SegkitError(path, f"{subject} too large, refused as a possible decompression bomb ({error})") from None
    except UnidentifiedImageError as error:
        raise SegkitError(path, f"{unreadable} ({error.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise SegkitError(path, f"corrupt or truncated {subject} ({error})") from None


def _open_checked(source: Path | IO[bytes], path: Path | str, what: str | None) -> Image.Image:
    """Open and fully decode ``source``, refusing images over :data:`MAX_IMAGE_PIXELS`."""
    with _image_errors(path, what):
        image = Image.open(source)
        try:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise SegkitError(path, f"{what or 'image'} too large ({width}x{height} pixels)")
            image.load()
        except BaseException:  # a refused or undecodable image must not keep its file open
            image.close()
            raise
    return image


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file, turning every failure into a SegkitError."""
    path = Path(path)
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False  # open() below reports it
    if empty:
        raise SegkitError(path, "file is empty (0 bytes)")
    return _open_checked(path, path, None)


def decode_image_bytes(data: bytes, path: str | Path, what: str) -> Image.Image:
    """Decode an image held in memory (e.g. base64 inside a JSON file ``path``), errors naming ``path``."""
    return _open_checked(io.BytesIO(data), path, what)


def peek_image(path: str | Path) -> tuple[str, tuple[int, int]]:
    """``(mode, (width, height))`` from the file header, without decoding the pixels.

    Raises:
        SegkitError: unreadable file or a header announcing a decompression bomb.
    """
    path = Path(path)
    with _image_errors(path, None):
        with Image.open(path) as image:
            return image.mode, image.size


def upright_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image as a viewer shows it (EXIF orientation applied), from the header only.

    Raises:
        SegkitError: unreadable file or a header announcing a decompression bomb.
    """
    path = Path(path)
    with _image_errors(path, None):
        with Image.open(path) as image:
            width, height = image.size
            try:
                turned = image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)
            except Exception:  # a broken EXIF block is ignored as upright_rgb ignores it
                turned = False
    return (height, width) if turned else (width, height)


def upright_rgb(image: Image.Image) -> np.ndarray:
    """An opened image as a viewer shows it: EXIF orientation applied, then ``(H, W, 3)`` uint8 RGB.

    The one EXIF-safe decoding step (files, labelme ``imageData``, uploads, PIL inputs).
    The image is turned in place: no full-size copy is made when nothing needs turning.
    """
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # a broken EXIF block must not make the pixels unreadable
        pass
    return to_rgb(image)


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
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB with its EXIF orientation applied."""
    return upright_rgb(open_image(path))


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


# ----------------------------------------------------------------------- listing image files
def _walk(folder: Path, recursive: bool) -> Iterator[tuple[Path, list[os.DirEntry[str]]]]:
    """``(folder, entries)`` of ``folder`` and, when ``recursive``, every sub-folder once.

    Symbolic links to folders are followed, but a folder already visited (a link
    loop, or two links to one folder) is not entered again, so the walk ends.
    Hidden entries (``.name``) are left out; entries come sorted by name.
    """
    visited: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            info = current.stat()
            if (info.st_dev, info.st_ino) in visited:
                continue
            visited.add((info.st_dev, info.st_ino))
            with os.scandir(current) as scan:
                entries = sorted((entry for entry in scan if not entry.name.startswith(".")), key=lambda e: e.name)
        except OSError:  # unreadable or vanished sub-folder: nothing to list there
            continue
        yield current, entries
        if recursive:
            pending += [Path(entry.path) for entry in reversed(entries) if _is_dir(entry)]


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows links; a looping or dangling link is not a folder
    except OSError:
        return False


def iter_image_files(folder: str | Path, recursive: bool = True) -> Iterator[Path]:
    """Image files under ``folder`` (sorted per folder, hidden ones left out), safe on symlink loops.

    Broken links named like images are yielded too, so callers can report them.
    """
    for _, entries in _walk(Path(folder), recursive):
        for entry in entries:
            path = Path(entry.path)
            if is_image_file(path) and not _is_dir(entry):
                yield path


def index_image_files(
    folder: str | Path, *, recursive: bool = True, problems: list[SegkitError] | None = None
) -> dict[str, Path]:
    """Image files of ``folder`` by relative path without extension: the key that pairs images with masks.

    ``a.png`` pairs with ``a.jpg`` in another folder; ``sub/a.png`` with ``sub/a.png``.

    Args:
        folder: the folder to list.
        recursive: include sub-folders (symbolic links followed, loops ended).
        problems: collects what is wrong (a broken or looping link, two files with one
            name); the file is left out. Without it, the first problem is raised.

    Raises:
        SegkitError: ``folder`` is not a folder; or a problem when ``problems`` is None.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SegkitError(folder, "not a folder" if folder.exists() else "folder not found")

    def report(error: SegkitError) -> None:
        if problems is None:
            raise error
        problems.append(error)

    by_name: dict[str, Path] = {}
    for path in iter_image_files(folder, recursive):
        if path.is_symlink() and not path.exists():
            report(SegkitError(path, "broken symbolic link (missing target or a link loop); left out"))
            continue
        name = path.relative_to(folder).with_suffix("").as_posix()
        if name in by_name:
            report(SegkitError(path, f"another file has the same name ({by_name[name].name}); left out"))
        else:
            by_name[name] = path
    return dict(sorted(by_name.items()))


def glob_image_files(pattern: str) -> list[Path]:
    """Image files matching a glob (``*``, ``?``, ``[...]``, ``**`` for any depth), sorted; safe on link loops.

    Unlike :func:`glob.glob`, ``**`` never walks round a symbolic-link loop (each folder
    is entered once), and hidden files and folders are not matched.
    """
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    rule = [re.compile(fnmatch.translate(part)) if part != "**" else None for part in parts[fixed:]]
    if not rule:
        return [root] if root.is_file() and is_image_file(root) else []
    recursive = len(rule) > 1 or rule[0] is None
    found = []
    for path in iter_image_files(root, recursive) if root.is_dir() else ():
        if _matches(rule, path.relative_to(root).parts):
            found.append(path)
    return sorted(found)


def _matches(rule: list[re.Pattern[str] | None], parts: tuple[str, ...]) -> bool:
    """Whether path ``parts`` match the pattern segments (``None`` is ``**``: zero or more folders)."""
    if not rule:
        return not parts
    head, rest = rule[0], rule[1:]
    if head is None:
        return any(_matches(rest, parts[skip:]) for skip in range(len(parts) + 1))
    return bool(parts) and head.fullmatch(parts[0]) is not None and _matches(rest, parts[1:])


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
