"""Hostile and broken uploads: size limits, lying headers, bombs, junk, and the server keeps answering."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from corpus.make_corpus import huge_gif, png_bomb
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from segkit.serving.app import create_app
from segkit.serving.uploads import decode_upload, open_upload

from . import (
    encode,
    live_server,
    sample_image,
    tiny_checkpoint,
)

LIMIT = 256 * 1024  # bytes accepted by the test app
IMAGE = sample_image(24, 32)
PNG = encode(IMAGE)


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(tiny_checkpoint(), device="cpu", max_upload_bytes=LIMIT, max_pixels=10_000_000)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> TestClient:
    with TestClient(app) as test_client:
        yield test_client


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail


def post_raw(client: TestClient, data: Any, content_type: str = "image/png", **headers: str) -> httpx.Response:
    return client.post("/predict", content=data, headers={"Content-Type": content_type, **headers})


def post_file(client: TestClient, data: bytes, name: str = "x.png", content_type: str = "image/png") -> httpx.Response:
    return client.post("/predict", files={"file": (name, data, content_type)})


# ------------------------------------------------------------------ size limits
def test_declared_length_over_limit_is_refused_before_reading(client: TestClient) -> None:
    assert_error(post_raw(client, bytes(LIMIT + 1)), 413, "larger than the 0.25 MB limit")
    assert_error(post_file(client, bytes(3 * LIMIT)), 413, "larger than")


def test_file_part_over_limit_within_multipart_framing(client: TestClient) -> None:
    # The body is within limit + multipart framing, but the file itself is one byte too many.
    assert_error(post_file(client, PNG + bytes(LIMIT + 1 - len(PNG))), 413, "larger than")
    assert post_file(client, PNG).status_code == 200


def test_chunked_body_without_length_is_counted(client: TestClient) -> None:
    chunks = (bytes(16 * 1024) for _ in range(2 * LIMIT // (16 * 1024)))  # twice the limit, no Content-Length
    assert_error(post_raw(client, chunks), 413, "larger than")


async def asgi_post(
    app: FastAPI, headers: list[tuple[bytes, bytes]], chunks: list[bytes], path: str = "/predict"
) -> tuple[int, int, dict[bytes, bytes]]:
    """POST straight through ASGI, with headers no HTTP client would send; (status, receive calls, headers)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    calls = 0
    starts: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[calls - 1], "more_body": calls < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            starts.append(message)

    await app(scope, receive, send)
    return starts[0]["status"], calls, dict(starts[0]["headers"])


CHUNK = bytes(16 * 1024)


def test_lying_content_length_is_not_trusted() -> None:
    app = create_app(tiny_checkpoint(), device="cpu", max_upload_bytes=LIMIT, discard_bytes=2 * LIMIT)
    headers = [(b"content-type", b"image/png"), (b"content-length", b"100")]
    status, calls, answer = asyncio.run(asgi_post(app, headers, [CHUNK] * 100))  # 1.6 MB under "100 bytes"
    assert status == 413
    assert calls <= 2 * LIMIT // len(CHUNK) + 2  # read (and thrown away) up to the discard bound only
    assert answer[b"connection"] == b"close"  # the rest was not read: the connection cannot be reused


def test_an_early_answer_reads_the_rest_of_the_body_first(app: FastAPI) -> None:
    """413 (too large), 415 (not an image), 404: the client is still sending; its body is read before the answer."""
    for content_type, chunks, path, status in [
        (b"image/png", 40, "/predict", 413),
        (b"text/plain", 10, "/predict", 415),
        (b"image/png", 40, "/nowhere", 404),
    ]:
        headers = [(b"content-type", content_type), (b"content-length", str(chunks * len(CHUNK)).encode())]
        code, calls, answer = asyncio.run(asgi_post(app, headers, [CHUNK] * chunks, path))
        assert (code, calls) == (status, chunks)  # every chunk read, no more
        assert b"connection" not in answer  # the connection stays usable


def test_early_answer_without_reading_when_the_body_cannot_be_discarded() -> None:
    app = create_app(tiny_checkpoint(), device="cpu", max_upload_bytes=LIMIT, discard_bytes=2 * LIMIT)
    huge = str(10 * 2**30).encode()  # 10 GB declared: more than the discard bound
    status, calls, answer = asyncio.run(asgi_post(app, [(b"content-length", huge)], [CHUNK] * 10))
    assert (status, calls, answer[b"connection"]) == (413, 0, b"close")
    # A client waiting for "100 Continue" has sent nothing: answer at once instead of asking for the body.
    waiting = [(b"content-length", str(3 * LIMIT).encode()), (b"expect", b"100-continue")]
    status, calls, answer = asyncio.run(asgi_post(app, waiting, [CHUNK] * 10))
    assert (status, calls, answer[b"connection"]) == (413, 0, b"close")


def test_invalid_content_length_header(app: FastAPI) -> None:
    headers = [(b"content-type", b"image/png"), (b"content-length", b"12abc")]
    assert asyncio.run(asgi_post(app, headers, [PNG]))[:2] == (400, 0)


def test_slow_body_gets_408() -> None:
    app = create_app(tiny_checkpoint(), device="cpu", body_timeout_s=0.3)
    chunks_sent = 0

    async def slow_post() -> tuple[int, dict[bytes, bytes]]:
        statuses: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal chunks_sent
            chunks_sent += 1
            await asyncio.sleep(0.1)  # 10 bytes every 100 ms: would take forever
            return {"type": "http.request", "body": b"x" * 10, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test"), (b"content-type", b"image/png"), (b"transfer-encoding", b"chunked")],
            "client": ("127.0.0.1", 50000),
            "server": ("test", 80),
        }
        await app(scope, receive, send)
        return statuses[0]["status"], dict(statuses[0]["headers"])

    start = time.monotonic()
    status, headers = asyncio.run(slow_post())
    assert status == 408 and headers[b"connection"] == b"close"
    assert time.monotonic() - start < 2 and chunks_sent <= 5


# ------------------------------------------------------------------ bombs
@pytest.mark.parametrize(
    ("data", "words"),
    [
        (png_bomb(8000, 8000), ("8000x8000 = 64,000,000 pixels", "10,000,000")),  # our limit
        # Pillow's hard limit, hit while reading the header: still told in the server's terms
        (png_bomb(30000, 30000), ("900,000,000 pixels", "10,000,000 limit", "--max-megapixels")),
        (huge_gif(), ("4,294,836,225 pixels", "--max-megapixels")),
    ],
    ids=["png-64MP", "png-900MP", "gif-4GP"],
)
def test_decompression_bombs_are_refused_before_decoding(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, data: bytes, words: tuple[str, ...]
) -> None:
    assert len(data) < LIMIT  # small on the wire
    loads: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(image: ImageFile.ImageFile) -> Any:
        loads.append(f"{image.format} {image.size}")
        return original(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    assert_error(post_raw(client, data), 413, *words)
    assert loads == []  # no pixel was decoded


def test_pillows_own_limit_is_neither_quoted_nor_warned_about() -> None:
    import warnings

    from segkit.serving.uploads import UploadRejected

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UploadRejected, match=r"over the 50,000,000 limit \(segkit serve --max-megapixels\)"):
            open_upload(png_bomb(15000, 13000), 50_000_000)  # 195 MP: above Pillow's error threshold
        with pytest.raises(UploadRejected, match="10000x10000 = 100,000,000 pixels, over the 50,000,000"):
            open_upload(png_bomb(10000, 10000), 50_000_000)  # 100 MP: above Pillow's warning threshold only
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_default_pixel_limit_refuses_the_7000x7000_png() -> None:
    """A 6 KB PNG of 7000x7000 used to be decoded (+1.3 GB per request): the default limit is now 25 MP."""
    bomb = png_bomb(7000, 7000)
    with TestClient(create_app(tiny_checkpoint(), device="cpu")) as default_limits:
        assert_error(post_raw(default_limits, bomb), 413, "49,000,000 pixels", "25,000,000", "--max-megapixels")


def test_pixel_limit_is_configurable() -> None:
    with TestClient(create_app(tiny_checkpoint(), device="cpu", max_pixels=1000)) as small:
        assert_error(post_file(small, encode(sample_image(40, 40))), 413, "40x40 = 1,600 pixels", "1,000")
        assert post_file(small, encode(sample_image(25, 40))).status_code == 200


# ------------------------------------------------------------------ junk
def _truncated_jpeg() -> bytes:
    data = encode(sample_image(64, 64), "JPEG", quality=90)
    return data[: len(data) // 2]


def _corrupt_png() -> bytes:
    data = bytearray(encode(sample_image(64, 64)))
    data[60:200] = bytes(140)  # zeros over the compressed pixels (and the IDAT chunk's length)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"hello, I am not an image", ("not a readable image",)),
        (b"<html><script>alert(1)</script></html>", ("not a readable image",)),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", ("accepted formats",)),  # never reaches Ghostscript
        (encode(Image.fromarray(IMAGE), "TGA"), ("accepted formats",)),
        (encode(Image.fromarray(IMAGE), "PCX"), ("accepted formats",)),
        (PNG[:40], ("not a readable image",)),
        (PNG[: len(PNG) // 2], ("corrupt or truncated PNG",)),
        (_truncated_jpeg(), ("corrupt or truncated JPEG",)),
        (_corrupt_png(), ()),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), ()),
    ],
    ids=[
        "text",
        "html",
        "eps",
        "tga",
        "pcx",
        "png-header-only",
        "png-half",
        "jpeg-half",
        "png-corrupt",
        "png-magic-only",
    ],
)
def test_not_an_image_or_broken_is_400(client: TestClient, data: bytes, words: tuple[str, ...]) -> None:
    assert_error(post_raw(client, data), 400, *words)
    assert_error(post_file(client, data), 400, *words)


def test_empty_uploads(client: TestClient) -> None:
    assert_error(post_raw(client, b""), 400, "empty upload")
    assert_error(post_file(client, b""), 400, "empty upload")


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "text/html; charset=utf-8"])
def test_non_image_content_type_is_415(client: TestClient, content_type: str) -> None:
    assert_error(post_raw(client, PNG, content_type), 415, "unsupported content type")
    assert_error(post_file(client, PNG, content_type=content_type), 415, "unsupported content type")


def test_malformed_multipart(client: TestClient) -> None:
    assert_error(post_raw(client, PNG, "multipart/form-data"), 400, "boundary")
    assert_error(client.post("/predict", files={"image": ("x.png", PNG, "image/png")}), 400, "field named 'file'")
    text_field = client.post("/predict", data={"file": "not a file"}, files={"other": ("x.png", PNG, "image/png")})
    assert_error(text_field, 400, "field named 'file'")
    two = [("file", ("a.png", PNG, "image/png")), ("file", ("b.png", PNG, "image/png"))]
    assert_error(client.post("/predict", files=two), 400, "Too many files")
    garbage = b"--xyz\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--xyz--\r\n"
    assert_error(post_raw(client, garbage, "multipart/form-data; boundary=xyz"), 400, "invalid multipart")


# ------------------------------------------------------------------ nothing touches the disk
def test_upload_never_touches_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_disk(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an upload was spooled to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)  # what SpooledTemporaryFile rolls over to
    noise = np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)
    big = encode(noise)
    assert len(big) > 1024 * 1024  # over Starlette's default 1 MB in-memory spool
    evil_name = str(tmp_path / "evil.png")
    with TestClient(create_app(tiny_checkpoint(), device="cpu")) as default_limits:
        for name in (evil_name, "../../escape.png", "x\x00.png"):
            response = post_file(default_limits, big, name=name)
            assert response.status_code == 200, response.text
    assert list(tmp_path.iterdir()) == []
    assert not Path("escape.png").exists() and not Path("../../escape.png").exists()


def test_open_and_decode_apply_limits_directly() -> None:
    assert decode_upload(open_upload(PNG, 24 * 32)).shape == (24, 32, 3)
    with pytest.raises(Exception, match="over the 100 limit") as error:
        open_upload(PNG, max_pixels=100)
    assert error.value.status_code == 413


# ------------------------------------------------------------------ still answering
def test_still_answers_after_bad_requests(client: TestClient) -> None:
    for data in (b"junk", png_bomb(8000, 8000), PNG[:50], bytes(LIMIT + 10)):
        assert post_raw(client, data).status_code in (400, 413)
    assert client.get("/health").json() == {"status": "ok"}
    assert post_file(client, PNG).status_code == 200


def test_real_server_refuses_huge_declared_body_and_keeps_serving(app: FastAPI) -> None:
    with live_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 10737418240\r\n\r\n"  # claims 10 GB, then waits for the answer
            )
            reply = connection.recv(65536)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        with httpx.Client(base_url=url, timeout=20) as http:
            streamed = http.post(
                "/predict", content=(bytes(32 * 1024) for _ in range(64)), headers={"Content-Type": "image/png"}
            )
            assert_error(streamed, 413, "larger than")
            assert_error(http.post("/predict", content=b"junk", headers={"Content-Type": "image/png"}), 400)
            assert http.get("/health").json() == {"status": "ok"}
            assert http.post("/predict", files={"file": ("a.png", PNG, "image/png")}).status_code == 200
