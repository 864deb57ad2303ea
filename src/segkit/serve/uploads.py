"""Validation of uploaded images: size limits, content types, and decoding in memory.

An upload is untrusted, so it is checked in the cheapest order:

1. the declared ``Content-Length`` against the byte limit, before reading anything;
2. the content type (a raw body must be an image or ``application/octet-stream``);
3. the bytes actually received, counted while the body streams in (the header
   may lie or be absent with chunked transfer);
4. the image header: its format must be a common raster format and its pixel
   count within the limit *before* any pixel is decoded (decompression bombs);
5. the decode itself; any failure on the client's bytes is a 400.

Everything stays in memory: the body is never written to a file (multipart
parts are kept in memory, not spooled to disk) and the client's filename is
never used. Rejections raise :class:`UploadRejected` carrying the HTTP status.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from segkit.data.io import to_rgb
from segkit.errors import SegkitError

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000

# Room for the boundaries and part headers around the file in a multipart body.
MULTIPART_OVERHEAD = 64 * 1024
MAX_FORM_FIELDS = 8

# Pillow formats accepted; others (EPS runs Ghostscript, PSD, FITS, ...) are not worth the risk.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM", "AVIF")
RAW_MEDIA_TYPES = ("application/octet-stream", "")  # plus any image/*


class UploadRejected(SegkitError):
    """A request the server refuses, with the HTTP status code to answer it with."""

    def __init__(self, status_code: int, problem: str) -> None:
        super().__init__(None, problem)
        self.status_code = status_code


@dataclass(frozen=True)
class UploadLimits:
    """What one request may carry.

    Attributes:
        max_bytes: largest accepted image file (the request body, less multipart framing).
        max_pixels: largest accepted ``width * height``, checked before decoding.
    """

    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise SegkitError(
                None, f"upload limits must be positive, got {self.max_bytes} bytes, {self.max_pixels} pixels"
            )


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


def too_large(limits: UploadLimits) -> UploadRejected:
    """The 413 answer for a body over the byte limit."""
    return UploadRejected(413, f"upload is larger than the {_megabytes(limits.max_bytes)} limit")


def media_type(content_type: str | None) -> str:
    """``"Image/PNG; charset=x"`` -> ``"image/png"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_media_type(content_type: str | None) -> None:
    """Refuse (415) a body whose declared type is neither an image nor opaque bytes."""
    kind = media_type(content_type)
    if kind not in RAW_MEDIA_TYPES and not kind.startswith("image/"):
        raise UploadRejected(
            415,
            f"unsupported content type {kind!r}: send the image as multipart/form-data (field 'file'), "
            "or as a raw body with an image/* or application/octet-stream content type",
        )


def check_declared_length(content_length: str | None, limit: int, limits: UploadLimits) -> None:
    """Refuse a body whose ``Content-Length`` already exceeds ``limit``, before reading it."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise UploadRejected(400, f"invalid Content-Length header {content_length[:40]!r}") from None
    if declared > limit:
        raise too_large(limits)


async def limited_stream(chunks: AsyncIterator[bytes], limit: int, limits: UploadLimits) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, refusing (413) as soon as more than ``limit`` bytes have arrived."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise too_large(limits)
        yield chunk


async def _file_from_multipart(headers: Headers, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The bytes of the ``file`` part of a multipart body, parsed by Starlette in memory."""
    parser = MultiPartParser(headers, chunks, max_files=1, max_fields=MAX_FORM_FIELDS)
    parser.spool_max_size = limit  # the body is bounded by ``limit``, so parts never roll over to disk
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise UploadRejected(400, f"invalid multipart body: {error.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise UploadRejected(400, "multipart body has no file in a field named 'file'")
        check_media_type(upload.content_type)
        return await upload.read()
    finally:
        await form.close()


async def read_upload(request: Request, limits: UploadLimits) -> bytes:
    """The image bytes of a request: the ``file`` part of a multipart form, or the raw body.

    Raises:
        UploadRejected: 413 over the byte limit, 415 for a non-image content type,
            400 for an empty or malformed body.
    """
    is_multipart = media_type(request.headers.get("content-type")) == "multipart/form-data"
    limit = limits.max_bytes + (MULTIPART_OVERHEAD if is_multipart else 0)
    check_declared_length(request.headers.get("content-length"), limit, limits)
    chunks = limited_stream(request.stream(), limit, limits)
    if is_multipart:
        data = await _file_from_multipart(request.headers, chunks, limit)
    else:
        check_media_type(request.headers.get("content-type"))
        data = b"".join([chunk async for chunk in chunks])
    if len(data) > limits.max_bytes:
        raise too_large(limits)
    if not data:
        raise UploadRejected(400, "empty upload: send an image file")
    return data


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to ``(H, W, 3)`` uint8 RGB, with the EXIF orientation applied.

    The pixel count is checked from the header before anything is decoded, so a
    small file that declares a huge image is refused without allocating it.
    Only the first frame of animated or multi-page files is used.

    Raises:
        UploadRejected: 413 when the image has more than ``max_pixels`` pixels,
            400 when the bytes are not a readable image of an accepted format.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:  # Pillow's own hard limit, hit inside open()
        raise UploadRejected(413, f"image is over the pixel limit ({error})") from None
    except Exception as error:  # any failure to parse the client's bytes is the client's
        raise UploadRejected(
            400, f"not a readable image ({error.__class__.__name__}); accepted formats: {', '.join(ALLOWED_FORMATS)}"
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise UploadRejected(400, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise UploadRejected(
            413, f"image is {width}x{height} = {width * height:,} pixels, over the {max_pixels:,} limit"
        )
    try:
        image.load()
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # a broken EXIF block must not make the pixels unreadable
            pass
        return to_rgb(image)
    except Exception as error:  # truncated or corrupt pixel data (OSError, SyntaxError, ...)
        raise UploadRejected(
            400, f"corrupt or truncated {image.format} image ({error.__class__.__name__}: {error})"
        ) from None
