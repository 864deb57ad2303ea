"""What a ``segkit serve`` app may accept and how it schedules the model: one validated dataclass.

The command line builds it, :func:`segkit.serving.app.create_app` takes its fields as
keyword arguments, and worker processes receive it as JSON in an environment variable
(:meth:`ServeOptions.to_json` / :meth:`ServeOptions.from_json`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from segkit.errors import SegkitError

MEBIBYTE = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 20 * MEBIBYTE
# 25 MP admits 24 MP camera photos; one image of that size peaks near 0.8 GB inside the
# predictor (full-size float probabilities), so the default bound keeps one request well under a GB.
DEFAULT_MAX_PIXELS = 25_000_000
# An oversized body is read and thrown away up to this size so that any client can read the 413.
DEFAULT_DISCARD_BYTES = 256 * MEBIBYTE
API_KEY_ENV = "SEGKIT_API_KEY"


@dataclass(frozen=True)
class ServeOptions:
    """Settings of one served model.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps`` (ignored for a ready Predictor).
        max_upload_bytes: largest accepted image file; larger bodies get 413.
        max_pixels: largest accepted ``width * height`` (checked before decoding, 413); also the
            budget of decoded pixels held by all requests together, so one image of the largest
            size is processed at a time and memory stays bounded.
        api_key: when set, ``/predict`` and ``/info`` need ``Authorization: Bearer <key>``.
        batch_size: most images per forward pass of the micro-batcher (1: one request at a time).
        batch_wait_ms: how long the first request of a batch waits for companions.
        max_queue: requests held at once (being read, decoded, waiting or predicted);
            one more is answered 503 with ``Retry-After``.
        decode_threads: threads that decode uploads and encode answers.
        body_timeout_s: a request body must arrive within this many seconds (else 408).
        discard_bytes: an answer sent before its body was read (413, 401, ...) first reads and
            discards the rest of the body up to this size, so that clients that send the whole
            body before reading (``urllib``, ``requests``) see the answer; beyond it the
            connection is closed.
        allowed_hosts: ``Host`` header values accepted (``*.example.org`` wildcards); ``None``: any.
        cors_origins: origins whose web pages may call the API (CORS); empty: none.
    """

    device: str = "auto"
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    api_key: str | None = None
    batch_size: int = 4
    batch_wait_ms: float = 5.0
    max_queue: int = 32
    decode_threads: int = 2
    body_timeout_s: float = 60.0
    discard_bytes: int = DEFAULT_DISCARD_BYTES
    allowed_hosts: tuple[str, ...] | None = None
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_pixels < 1:
            raise SegkitError(
                None, f"upload limits must be positive, got {self.max_upload_bytes} bytes, {self.max_pixels} pixels"
            )
        positive = {
            "batch size": self.batch_size,
            "queue size": self.max_queue,
            "decode threads": self.decode_threads,
            "body timeout": self.body_timeout_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise SegkitError(None, f"{name} must be positive, got {value}")
        if self.batch_wait_ms < 0 or self.discard_bytes < 0:
            raise SegkitError(None, "the batch wait and the discard size cannot be negative")
        if self.api_key is not None and not is_valid_api_key(self.api_key):
            raise SegkitError(
                None,
                "the API key must be 1 to 256 printable ASCII characters without spaces (e.g. `openssl rand -hex 32`)",
            )
        # Lists from JSON or the command line become tuples, so the options stay hashable and frozen.
        if self.allowed_hosts is not None:
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
            if not self.allowed_hosts:
                raise SegkitError(None, "--allowed-hosts needs at least one host name")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        """Options written by :meth:`to_json` (unknown keys are an error)."""
        values = json.loads(text)
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SegkitError(None, f"unknown serve options {', '.join(unknown)}")
        return cls(**values)


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a connection may take to send its headers, stay idle, and drain at shutdown.

    Attributes:
        header_timeout_s: seconds from the connection (or the previous answer) to the end of the headers.
        keep_alive_s: seconds an idle kept-alive connection stays open.
        shutdown_timeout_s: seconds the requests in flight get to finish after SIGTERM.
    """

    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise SegkitError(None, f"{name.removesuffix('_s').replace('_', ' ')} must be positive, got {value}")


def is_valid_api_key(key: str) -> bool:
    """An API key travels in a header: visible ASCII only, no spaces, at most 256 characters."""
    return 0 < len(key) <= 256 and all("!" <= char <= "~" for char in key)
