"""Every option of ``segkit serve``, declared once, and the settings of the served app built from them.

:class:`ServeConfig` holds the command's options in the command line's units (help, defaults,
checks): the command line is generated from its fields and :func:`segkit.serve` takes them as
keywords. It builds :class:`ServeOptions` (what the app accepts and how it schedules the model,
which :func:`segkit.serving.app.create_app` takes and worker processes receive as JSON in an
environment variable) and :class:`ConnectionLimits` (uvicorn's timeouts). This module
imports no web framework, so the command line can read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

from segkit.errors import SegkitError
from segkit.options import option
from segkit.prediction.options import device_option

MEBIBYTE = 1024 * 1024
MEGAPIXEL = 1_000_000
# An oversized body is read and thrown away up to this size so that any client can read the 413.
DEFAULT_DISCARD_BYTES = 256 * MEBIBYTE
API_KEY_ENV = "SEGKIT_API_KEY"
API_KEY_RULE = "1 to 256 printable ASCII characters without spaces (e.g. `openssl rand -hex 32`)"


@dataclass(frozen=True)
class ServeConfig:
    """Every option of ``segkit serve`` and :func:`segkit.serve`, in the command line's units (checked when made).

    Each field is also the command's option (``max_upload_mb`` is ``--max-upload-mb``), with
    its help; :meth:`serve_options` and :meth:`connection_limits` turn them into the app's
    settings and uvicorn's timeouts.

    Raises:
        SegkitError: a limit or timeout that is not positive, a negative batch wait, an empty or
            malformed API key, fewer than one worker, a port outside 0 to 65535, an empty
            ``allowed_hosts`` (the app's check); each names the option (``--max-queue must be positive, not 0``).
    """

    host: str = option("127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    port: int = option(8000, help="TCP port", parse=int)
    workers: int = option(1, help="server processes, each with its own model", parse=int)
    device: str = device_option(group="options")
    api_key: str | None = option(
        None,
        help="require 'Authorization: Bearer KEY' on /predict and /info (default: the SEGKIT_API_KEY environment "
        "variable, which keeps the key out of the process list; none when unset)",
        group="access",
    )
    allowed_hosts: tuple[str, ...] | None = option(
        None,
        help="Host header names accepted, '*.example.org' wildcards allowed "
        "(default: localhost names on a loopback --host, any otherwise)",
        parse=tuple,
        nargs="+",
        metavar="HOST",
        group="access",
    )
    cors_origin: tuple[str, ...] = option(
        (),
        help="let web pages of ORIGIN (e.g. https://app.example.org) call the API; repeatable (default: none)",
        parse=tuple,
        action="append",
        metavar="ORIGIN",
        group="access",
    )
    max_upload_mb: float = option(20, help="largest accepted upload in MiB", parse=float, metavar="MB", group="limits")
    # 25 MP admits 24 MP camera photos; one image of that size peaks near 0.8 GB inside the
    # predictor (full-size float probabilities), so the default bound keeps one request well under a GB.
    max_megapixels: float = option(
        25,
        help="largest accepted image, checked before decoding; also the decoded pixels all requests may hold at "
        "once, which bounds memory",
        parse=float,
        metavar="MP",
        group="limits",
    )
    max_queue: int = option(
        32,
        help="requests held at once; more are answered 503 with Retry-After",
        parse=int,
        metavar="N",
        group="limits",
    )
    body_timeout: float = option(60, help="seconds a request body may take", parse=float, metavar="S", group="limits")
    header_timeout: float = option(
        10, help="seconds request headers may take", parse=float, metavar="S", group="limits"
    )
    keep_alive: float = option(
        5, help="seconds an idle connection stays open", parse=float, metavar="S", group="limits"
    )
    shutdown_timeout: float = option(
        30, help="seconds requests in flight get after SIGTERM", parse=float, metavar="S", group="limits"
    )
    batch_size: int = option(
        4,
        help="most concurrent requests predicted in one forward pass; 1: one at a time; a GPU profits from more",
        parse=int,
        metavar="N",
        group="batching",
    )
    batch_wait_ms: float = option(
        5, help="how long a request waits for others to share its batch", parse=float, metavar="MS", group="batching"
    )

    def __post_init__(self) -> None:
        positive = ("max_upload_mb", "max_megapixels", "max_queue", "batch_size")
        for name in (*positive, "body_timeout", "header_timeout", "keep_alive", "shutdown_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise SegkitError(None, f"{_flag(name)} must be positive, not {value:g}")
        if not self.batch_wait_ms >= 0:
            raise SegkitError(None, f"--batch-wait-ms must be at least 0, not {self.batch_wait_ms:g}")
        if self.api_key == "":
            raise SegkitError(None, "--api-key is empty: give a key, or leave the option out")
        if self.api_key is not None and not is_valid_api_key(self.api_key):
            raise SegkitError(None, f"--api-key must be {API_KEY_RULE}")
        if self.workers < 1:
            raise SegkitError(None, f"--workers must be at least 1, not {self.workers}")
        if not 0 <= self.port <= 65535:
            raise SegkitError(None, f"--port must be between 0 and 65535, not {self.port}")
        if self.allowed_hosts is not None:
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        object.__setattr__(self, "cors_origin", tuple(self.cors_origin))
        self.connection_limits()
        self._app_options(self.api_key)  # the app's own checks: beside the ones above, --allowed-hosts not empty

    def serve_options(self) -> ServeOptions:
        """The app's settings, with this API key or else the ``SEGKIT_API_KEY`` environment variable's.

        Raises:
            SegkitError: ``SEGKIT_API_KEY`` set but empty or malformed.
        """
        api_key = self.api_key if self.api_key is not None else os.environ.get(API_KEY_ENV)
        if api_key == "":
            raise SegkitError(None, f"{API_KEY_ENV} is set but empty: give it a key or unset it")
        return self._app_options(api_key)

    def _app_options(self, api_key: str | None) -> ServeOptions:
        return ServeOptions(
            device=self.device,
            max_upload_bytes=int(self.max_upload_mb * MEBIBYTE),
            max_pixels=int(self.max_megapixels * MEGAPIXEL),
            api_key=api_key,
            batch_size=self.batch_size,
            batch_wait_ms=self.batch_wait_ms,
            max_queue=self.max_queue,
            body_timeout_s=self.body_timeout,
            allowed_hosts=self.allowed_hosts or None,
            cors_origins=self.cors_origin,
        )

    def connection_limits(self) -> ConnectionLimits:
        """uvicorn's timeouts: how long headers may take, idle connections stay, requests get at shutdown."""
        return ConnectionLimits(
            header_timeout_s=self.header_timeout,
            keep_alive_s=self.keep_alive,
            shutdown_timeout_s=self.shutdown_timeout,
        )


DEFAULT_MAX_UPLOAD_BYTES = int(ServeConfig.max_upload_mb * MEBIBYTE)
DEFAULT_MAX_PIXELS = int(ServeConfig.max_megapixels * MEGAPIXEL)


@dataclass(frozen=True)
class ServeOptions:
    """Settings of one served model (the defaults are :class:`ServeConfig`'s, in bytes, pixels and seconds).

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

    device: str = ServeConfig.device
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    api_key: str | None = None
    batch_size: int = ServeConfig.batch_size
    batch_wait_ms: float = ServeConfig.batch_wait_ms
    max_queue: int = ServeConfig.max_queue
    decode_threads: int = 2
    body_timeout_s: float = ServeConfig.body_timeout
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
            raise SegkitError(None, f"the API key must be {API_KEY_RULE}")
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
    """How long a connection may take to send its headers, stay idle, and drain at shutdown (defaults: :class:`ServeConfig`'s).

    Attributes:
        header_timeout_s: seconds from the connection (or the previous answer) to the end of the headers.
        keep_alive_s: seconds an idle kept-alive connection stays open.
        shutdown_timeout_s: seconds the requests in flight get to finish after SIGTERM.
    """

    header_timeout_s: float = ServeConfig.header_timeout
    keep_alive_s: float = ServeConfig.keep_alive
    shutdown_timeout_s: float = ServeConfig.shutdown_timeout

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise SegkitError(None, f"{name.removesuffix('_s').replace('_', ' ')} must be positive, got {value}")


def _flag(name: str) -> str:
    """The command-line flag of a :class:`ServeConfig` field."""
    return "--" + name.replace("_", "-")


def is_valid_api_key(key: str) -> bool:
    """An API key travels in a header: visible ASCII only, no spaces, at most 256 characters."""
    return 0 < len(key) <= 256 and all("!" <= char <= "~" for char in key)
