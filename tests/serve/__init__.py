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
import pytest
import torch
from PIL import Image

from segkit.data.transforms import PreprocessConfig
from segkit.models import create_model
from segkit.training.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from segkit.visualize import PALETTE

CLASSES = ("background", "cat", "dog")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread than on two busy cores (autouse where imported)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_checkpoint(classes: tuple[str, ...] = CLASSES, *, binary: bool = False, seed: int = 2) -> dict[str, Any]:
    """A real segkit checkpoint of a 2-level, 4-channel U-Net with random weights (32x32 input).

    The head's bias is zeroed so that the mask follows the image rather than one
    dominant random bias: with seed 2 all three classes appear on :func:`sample_image`.
    """
    torch.manual_seed(seed)
    num_outputs = 1 if binary else len(classes)
    kwargs = {"base_channels": 4, "depth": 2}
    model = create_model("unet", num_outputs, **kwargs)
    with torch.no_grad():
        model.head.bias.zero_()
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": {"name": "unet", "num_classes": num_outputs, "in_channels": 3, "kwargs": kwargs},
        "state_dict": model.state_dict(),
        "classes": list(classes),
        "palette": PALETTE[: len(classes)].tolist(),
        "binary": binary,
        "threshold": 0.5,
        "ignore_index": 255,
        "preprocess": PreprocessConfig(img_size=(32, 32)).to_dict(),
    }


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
