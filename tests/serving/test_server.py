"""The running server: early answers every client can read, slow clients cut off, SIGTERM, memory bounds."""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from corpus.make_corpus import png_bomb
from fastapi import FastAPI

from segkit.checkpoint import save_checkpoint
from segkit.serving.app import create_app
from segkit.serving.options import ConnectionLimits

from . import (
    encode,
    live_server,
    reset_peak_memory,
    resident_megabytes,
    sample_image,
    serve_process,
    tiny_checkpoint,
)

PNG = encode(sample_image(24, 32))
OVERSIZED = bytes(25 * 1024 * 1024)  # the 25 MB upload, over the default 20 MB limit


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(tiny_checkpoint(), device="cpu", body_timeout_s=1.0)


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve-process") / "tiny.pt"
    save_checkpoint(tiny_checkpoint(), path)
    return path


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def read_answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s pass)."""
    connection.settimeout(10)
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def closed_after(connection: socket.socket, limit_s: float = 5.0) -> float:
    """Seconds until the server closes ``connection`` (fails after ``limit_s``)."""
    start = time.monotonic()
    connection.settimeout(limit_s)
    try:
        while connection.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit_s} s")
    return time.monotonic() - start


# ------------------------------------------------------------------ 413 on every client
def test_oversized_upload_gets_413_on_every_client(app: FastAPI) -> None:
    with live_server(app) as url:
        # urllib sends "Connection: close" and the whole body before it reads: it used to get "connection reset".
        request = urllib.request.Request(f"{url}/predict", data=OVERSIZED, headers={"Content-Type": "image/png"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        assert "larger than the 20 MB limit" in refused.value.read().decode()

        with httpx.Client(base_url=url, timeout=30) as http:  # one kept-alive connection throughout
            assert http.post("/predict", content=OVERSIZED, headers={"Content-Type": "image/png"}).status_code == 413
            assert http.post("/predict", files={"file": ("big.png", OVERSIZED, "image/png")}).status_code == 413
            assert http.post("/predict", files={"file": ("a.png", PNG, "image/png")}).status_code == 200

        with socket.create_connection(address(url), timeout=30) as connection:  # the whole request, then read
            connection.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nConnection: close\r\n"
                + f"Content-Length: {len(OVERSIZED)}\r\n\r\n".encode()
                + OVERSIZED
            )
            answer = read_answer(connection)
        assert answer.startswith(b"HTTP/1.1 413") and b"larger than" in answer


def test_huge_declared_body_is_refused_at_once_and_the_connection_closed(app: FastAPI) -> None:
    with live_server(app) as url, socket.create_connection(address(url), timeout=10) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: 10737418240\r\n\r\n"  # claims 10 GB, then waits for the answer
        )
        answer = read_answer(connection)
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()


# ------------------------------------------------------------------ slow clients
def test_slow_or_silent_clients_are_cut_off(app: FastAPI) -> None:
    limits = ConnectionLimits(header_timeout_s=0.5, keep_alive_s=0.3)
    with live_server(app, limits) as url:
        with socket.create_connection(address(url)) as silent:
            assert closed_after(silent) < 3  # connected, sent nothing

        with socket.create_connection(address(url)) as dribbling:
            stop = threading.Event()

            def dribble() -> None:  # one header byte every 100 ms: each byte used to restart uvicorn's timer
                for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000:
                    if stop.wait(0.1):
                        return
                    try:
                        dribbling.send(bytes([byte]))
                    except OSError:
                        return

            sender = threading.Thread(target=dribble)
            sender.start()
            try:
                assert closed_after(dribbling) < 3
            finally:
                stop.set()
                sender.join()

        with socket.create_connection(address(url)) as kept_alive:
            kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200")
            assert closed_after(kept_alive) < 3  # idle after its answer: closed after the keep-alive time

        with socket.create_connection(address(url)) as kept_alive:  # the next request's headers are timed too
            kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /health HTTP/1.1\r\n")
            assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200")
            assert closed_after(kept_alive) < 3

        with httpx.Client(base_url=url) as http:  # the server still answers
            assert http.get("/health").json() == {"status": "ok"}


def test_slow_body_gets_408_and_huge_headers_400(app: FastAPI) -> None:
    with live_server(app) as url:
        with socket.create_connection(address(url), timeout=10) as connection:
            connection.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n" + PNG[:10]  # then nothing more
            )
            answer = read_answer(connection)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer

        with socket.create_connection(address(url), timeout=10) as connection:
            # 20 KB of headers and still no end: over the 16 KB bound on incomplete headers
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000)
            assert read_answer(connection).startswith(b"HTTP/1.1 400")


# ------------------------------------------------------------------ a real `segkit serve` process
@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_and_exits_0(checkpoint_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    body = encode(sample_image(64, 64))
    with serve_process(checkpoint_path, log=log) as (url, process):
        in_flight = socket.create_connection(address(url), timeout=20)
        in_flight.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:100]  # the request is under way; the rest of its body comes after SIGTERM
        )
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:  # new connections are refused
            try:
                socket.create_connection(address(url), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "the server still accepts connections after SIGTERM"
            time.sleep(0.05)
        in_flight.sendall(body[100:])
        answer = read_answer(in_flight)
        in_flight.close()
        assert answer.startswith(b"HTTP/1.1 200") and b"image/png" in answer
        assert process.wait(timeout=30) == 0, log.read_text()
    assert "stopped by SIGTERM" in log.read_text()


@pytest.mark.slow
def test_large_images_wait_for_each_other_and_memory_is_given_back(checkpoint_path: Path, tmp_path: Path) -> None:
    """Four 9-megapixel images at once peak no higher than one alone, and the memory returns afterwards."""
    bomb = png_bomb(3000, 3000)  # a few KB on the wire, 9 MP decoded
    post = lambda http: http.post("/predict", content=bomb, headers={"Content-Type": "image/png"}).status_code  # noqa: E731
    with serve_process(checkpoint_path, "--max-megapixels", "10", log=tmp_path / "serve.log") as (url, process):
        with httpx.Client(base_url=url, timeout=120) as http:
            for _ in range(2):
                assert post(http) == 200  # warm-up: the first large image sets up the allocator's pools
            baseline, _ = resident_megabytes(process.pid)
            reset_peak_memory(process.pid)
            assert post(http) == 200
            single_peak = resident_megabytes(process.pid)[1] - baseline
        reset_peak_memory(process.pid)
        with ThreadPoolExecutor(4) as pool:
            clients = [httpx.Client(base_url=url, timeout=120) for _ in range(4)]
            assert list(pool.map(post, clients)) == [200] * 4
            for client in clients:
                client.close()
        held, peak = resident_megabytes(process.pid)
    assert single_peak > 100  # the image is large enough to measure (9 MP: ~27 MB RGB, ~100 MB probabilities)
    assert peak - baseline < 1.5 * single_peak, (baseline, single_peak, peak)
    assert held - baseline < 0.3 * single_peak, (baseline, single_peak, held)
