"""Helpers shared by the ``segkit serve`` tests: a tiny checkpoint, test images, a live server, a server process."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from conftest import tiny_checkpoint as shared_tiny_checkpoint
from PIL import Image

from segkit.serving.options import ConnectionLimits

CLASSES = ("background", "cat", "dog")


def tiny_checkpoint(classes: tuple[str, ...] = CLASSES, *, binary: bool = False, seed: int = 2) -> dict[str, Any]:
    """The shared tiny U-Net checkpoint with a zeroed head bias: with seed 2 all three classes
    appear on :func:`sample_image`."""
    return shared_tiny_checkpoint(classes, binary, seed=seed, zero_head_bias=True)


def sample_image(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image with gradients, a bright disk and noise, so a random model sees structure."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack(
        [cols * 255 / max(width - 1, 1), rows * 255 / max(height - 1, 1), np.full((height, width), 90.0)], axis=2
    )
    disk = (rows - height / 2) ** 2 + (cols - width / 3) ** 2 < (min(height, width) / 4) ** 2
    image[disk] = (250, 240, 30)
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    """An image as file bytes in memory."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@contextmanager
def live_server(app: Any, limits: ConnectionLimits | None = None) -> Iterator[str]:
    """Run ``app`` as ``segkit serve`` does (timeouts, h11 bounds) in a background thread on a free
    loopback port; yields the base URL."""
    from uvicorn import Server

    from segkit.serving.server import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; the server uses this very socket (no race)
    host, port = sock.getsockname()
    server = Server(uvicorn_config(app, host, port, 1, limits or ConnectionLimits()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_process(checkpoint: Path, *options: str, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real ``segkit serve`` process on a free loopback port; yields (base URL, process), killed at the end."""
    import httpx

    port = free_port()
    source = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "segkit",
        "serve",
        str(checkpoint),
        "--port",
        str(port),
        "--device",
        "cpu",
        *options,
    ]
    with log.open("w") as stream:
        process = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"segkit serve exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def resident_megabytes(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of a process in MB, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak_memory(pid: int) -> None:
    """Start a new peak-resident-memory count (VmHWM) for a process (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
