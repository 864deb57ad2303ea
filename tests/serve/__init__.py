"""Helpers shared by the ``segkit serve`` tests: a tiny checkpoint, test images, a live server."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from conftest import tiny_checkpoint as shared_tiny_checkpoint

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
def live_server(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread on a free loopback port; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; the server uses this very socket (no race)
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
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
