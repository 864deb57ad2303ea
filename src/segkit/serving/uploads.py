"""Uploaded images: reading the body within limits, decoding in memory, and answering over unread bodies.

An upload is untrusted, so it is checked in the cheapest order:

1. the declared ``Content-Length`` against the byte limit, before reading anything;
2. the content type (a raw body must be an image or ``application/octet-stream``);
3. the bytes actually received, counted while the body streams in (the header
   may lie or be absent with chunked transfer), within a time limit;
4. the image header: its format must be a common raster format and its pixel
   count within the limit *before* any pixel is decoded (decompression bombs);
5. the decode itself; any failure on the client's bytes is a 400.

Everything stays in memory: the body is never written to a file (multipart
parts are kept in memory, not spooled to disk) and the client's filename is
never used. Rejections raise :class:`UploadRejected` carrying the HTTP status.

:class:`RequestBodyGuard` makes those early answers readable: a client that sends
its whole body before reading (Python's ``urllib``, ``requests``) gets "connection
reset" instead of the answer when the server closes a socket holding unread data.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import AsyncGenerator, AsyncIterator

import anyio
import numpy as np
from PIL import Image, ImageOps
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segkit.data.io import to_rgb
from segkit.errors import SegkitError

# Room for the boundaries and part headers around the file in a multipart body.
MULTIPART_OVERHEAD = 64 * 1024
MAX_FORM_FIELDS = 8

# Pillow formats accepted; others (EPS runs Ghostscript, PSD, FITS, ...) are not worth the risk.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM", "AVIF")
RAW_MEDIA_TYPES = ("application/octet-stream", "")  # plus any image/*


class UploadRejected(SegkitError):
    """A request the server refuses, with the HTTP status code (and headers) to answer it with."""

    def __init__(self, status_code: int, problem: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(None, problem)
        self.status_code = status_code
        self.headers = headers


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


def too_large(max_bytes: int) -> UploadRejected:
    """The 413 answer for a body over the byte limit."""
    return UploadRejected(413, f"upload is larger than the {_megabytes(max_bytes)} limit")


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


def declared_length(headers: Headers) -> int | None:
    """The ``Content-Length`` of a request, ``None`` when absent; 400 when it is not a number."""
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UploadRejected(400, f"invalid Content-Length header {value[:40]!r}") from None


async def limited_stream(chunks: AsyncIterator[bytes], limit: int, max_bytes: int) -> AsyncGenerator[bytes, None]:
    """Pass ``chunks`` through, refusing (413) as soon as more than ``limit`` bytes have arrived."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise too_large(max_bytes)
        yield chunk


async def _file_from_multipart(headers: Headers, chunks: AsyncGenerator[bytes, None], limit: int) -> bytes:
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


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The image bytes of a request: the ``file`` part of a multipart form, or the raw body.

    Raises:
        UploadRejected: 413 over the byte limit, 415 for a non-image content type,
            400 for an empty or malformed body (408 from :class:`RequestBodyGuard` when it is too slow).
    """
    is_multipart = media_type(request.headers.get("content-type")) == "multipart/form-data"
    limit = max_bytes + (MULTIPART_OVERHEAD if is_multipart else 0)
    declared = declared_length(request.headers)
    if declared is not None and declared > limit:
        raise too_large(max_bytes)
    chunks = limited_stream(request.stream(), limit, max_bytes)
    try:
        if is_multipart:
            data = await _file_from_multipart(request.headers, chunks, limit)
        else:
            check_media_type(request.headers.get("content-type"))
            data = b"".join([chunk async for chunk in chunks])
    except ClientDisconnect:
        raise UploadRejected(400, "the client closed the connection before sending the whole body") from None
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    if not data:
        raise UploadRejected(400, "empty upload: send an image file")
    return data


def open_upload(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the image header of ``data`` (no pixel is decoded yet) and check its size.

    Raises:
        UploadRejected: 413 when the image has more than ``max_pixels`` pixels,
            400 when the bytes are not an image of an accepted format.
    """
    try:
        with warnings.catch_warnings():  # Pillow warns above its own limit; the server's limit is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:  # Pillow's hard limit (twice its own), hit inside open()
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow opens"
        raise UploadRejected(
            413, f"image is {size}, over the {max_pixels:,} limit (segkit serve --max-megapixels)"
        ) from None
    except Exception as error:  # any failure to parse the client's bytes is the client's
        raise UploadRejected(
            400, f"not a readable image ({error.__class__.__name__}); accepted formats: {', '.join(ALLOWED_FORMATS)}"
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise UploadRejected(400, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        image.close()
        raise UploadRejected(
            413,
            f"image is {width}x{height} = {width * height:,} pixels, over the {max_pixels:,} limit "
            "(segkit serve --max-megapixels)",
        )
    return image


def decode_upload(image: Image.Image) -> np.ndarray:
    """Decode an image from :func:`open_upload` to ``(H, W, 3)`` uint8 RGB, EXIF orientation applied.

    Only the first frame of animated or multi-page files is used. The PIL image is
    closed here, so its full-size buffers are freed as soon as the array exists.

    Raises:
        UploadRejected: 400 when the pixel data is truncated or corrupt.
    """
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
    finally:
        image.close()


class RequestBodyGuard:
    """ASGI middleware: bound the time a request body may take, and never answer over an unread body.

    - Every ``receive`` of the body must complete before ``body_timeout_s`` after the request
      started; later, the app gets :class:`UploadRejected` (408).
    - When the app answers before the body was read to its end (413, 401, 415, 503 ...),
      the rest of the body is read and thrown away first, up to ``discard_bytes`` in all
      and within the same deadline, so the client is not reset while still sending. A body
      over that bound, a client that waits for ``100 Continue`` (it has sent nothing), or
      a deadline passed get the answer with ``Connection: close`` instead.

    Hand-written because neither uvicorn nor Starlette does this: uvicorn closes the socket
    right after an answer marked ``Connection: close`` (which ``urllib`` sends), and the
    kernel then resets the connection over the unread bytes.
    """

    def __init__(self, app: ASGIApp, *, discard_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.discard_bytes = discard_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            declared = declared_length(headers)
        except UploadRejected:
            declared = None
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        body = _BodyProgress(
            deadline=anyio.current_time() + self.body_timeout_s,
            complete=not chunked and not declared,
            declared=declared,
            awaits_continue=headers.get("expect", "").lower() == "100-continue",
        )

        async def guarded_receive() -> Message:
            if body.complete:  # later calls only wait for a disconnect: no deadline for those
                return await receive()
            message = await body.receive(receive)
            if message is None:
                raise UploadRejected(408, f"the request body did not arrive within {self.body_timeout_s:g} s")
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body.complete:
                if not await body.discard_rest(receive, self.discard_bytes):
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)


class _BodyProgress:
    """How much of one request body has been received, and until when it may arrive."""

    def __init__(self, *, deadline: float, complete: bool, declared: int | None, awaits_continue: bool) -> None:
        self.deadline = deadline
        self.complete = complete
        self.declared = declared
        self.awaits_continue = awaits_continue
        self.received = 0
        self.started = False

    async def receive(self, receive: Receive) -> Message | None:
        """The next message, or ``None`` when the deadline passed first."""
        with anyio.move_on_after(max(self.deadline - anyio.current_time(), 0)):
            message = await receive()
            self.started = True
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                self.complete = not message.get("more_body", False)
            else:  # http.disconnect: nothing more will come
                self.complete = True
            return message
        return None

    async def discard_rest(self, receive: Receive, limit: int) -> bool:
        """Read and drop the rest of the body; ``True`` when it ended within ``limit`` bytes and the deadline."""
        if self.awaits_continue and not self.started:
            return False  # the client sends the body only after 100 Continue, which it will not get
        if self.declared is not None and self.declared > limit:
            return False
        while not self.complete and self.received <= limit:
            if await self.receive(receive) is None:
                return False
        return self.complete and self.received <= limit
