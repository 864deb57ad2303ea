"""Running ``segkit serve``: uvicorn with connection timeouts, graceful stop on SIGTERM, worker processes.

- Request headers must arrive within ``header_timeout_s`` of the connection opening (or of
  the previous answer on a kept-alive connection), and at most ``MAX_HEADER_BYTES`` of them;
  idle kept-alive connections close after ``keep_alive_s``. Bodies have their own deadline
  (:class:`~segkit.serving.uploads.RequestBodyGuard`). Slow clients cannot hold connections.
- SIGTERM or SIGINT: the server stops accepting connections, finishes the requests in
  flight (at most ``shutdown_timeout_s``), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import h11
from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from segkit.errors import SegkitError
from segkit.serving.app import ENV_CHECKPOINT, ENV_OPTIONS, create_app, predictor_to_serve
from segkit.serving.options import API_KEY_ENV, ConnectionLimits, ServeConfig, ServeOptions
from segkit.serving.security import default_allowed_hosts, is_loopback

logger = logging.getLogger(__name__)

# Request line and headers together (h11's bound on an incomplete event): browsers send a few KB.
MAX_HEADER_BYTES = 16 * 1024
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class HeaderTimeoutConfig(Config):
    """uvicorn's configuration plus the header timeout that :class:`HeaderTimeoutProtocol` reads."""

    def __init__(self, app: Any, *, header_timeout_s: float, **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout_s = header_timeout_s


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol that closes a connection whose request headers do not arrive in time.

    Hand-written because uvicorn has no such timeout: its keep-alive timer stops at the
    first byte received, so a client sending one header byte every few seconds holds
    the connection (and its slot) forever.
    """

    header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are complete: a request is under way
            self._stop_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._start_header_timer()  # the next request on this kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        timeout = getattr(self.config, "header_timeout_s", None)
        if timeout is not None:
            self.header_timer = self.loop.call_later(timeout, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: Any, host: str, port: int, workers: int, limits: ConnectionLimits) -> HeaderTimeoutConfig:
    """The uvicorn configuration of ``segkit serve``: ``app`` is an app or, with workers, an import string."""
    return HeaderTimeoutConfig(
        app,
        factory=isinstance(app, str),
        host=host,
        port=port,
        workers=workers,
        http=HeaderTimeoutProtocol,
        header_timeout_s=limits.header_timeout_s,
        timeout_keep_alive=limits.keep_alive_s,
        timeout_graceful_shutdown=limits.shutdown_timeout_s,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )


def _note_stop_signal(signum: int, frame: object) -> None:
    """Receives the stop signal that uvicorn raises again after its graceful shutdown."""
    logger.info("segkit serve: stopped by %s", signal.Signals(signum).name)


def run_server(config: HeaderTimeoutConfig) -> None:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight and return.

    uvicorn raises the stop signal again once it has shut down (so that the default
    handler kills the process); the handler installed here takes it instead, so
    ``segkit serve`` returns and exits 0.
    """
    previous = {stop: signal.signal(stop, _note_stop_signal) for stop in STOP_SIGNALS}
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            Server(config).run()
    except SystemExit as stop:  # uvicorn's way out when it cannot bind the port or load the app
        if stop.code:
            raise SegkitError(
                None, f"could not start the server on {config.host}:{config.port} (the reason is logged above)"
            ) from None
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)


def serve_model(model: str | Path, **options: Any) -> None:
    """Serve a model over HTTP until SIGTERM or Ctrl+C: ``segkit serve`` (blocking).

    ``POST /predict`` answers a mask PNG (``?format=json`` or ``?format=overlay``), ``GET /info``
    the model card, ``GET /health`` the state; ``/`` is a web page and ``/docs`` the API docs.
    On SIGTERM or Ctrl+C the server stops accepting connections, finishes the requests in
    flight and returns.

    Args:
        model: a ``.pt`` checkpoint, an exported ``.onnx`` model or a ``--format hf`` folder.
        **options: the command's options, as :class:`~segkit.serving.options.ServeConfig`
            declares them (with their defaults): ``host="127.0.0.1"`` (``"0.0.0.0"`` for all),
            ``port=8000``, ``workers=1`` (server processes, each with its own model),
            ``device="auto"``; ``api_key`` (require ``Authorization: Bearer KEY`` on
            ``/predict`` and ``/info``; default: the ``SEGKIT_API_KEY`` environment variable,
            none when unset), ``allowed_hosts`` (``Host`` names accepted, ``*.example.org``
            wildcards allowed; default: localhost names on a loopback ``host``, any otherwise),
            ``cors_origin`` (origins such as ``https://app.example.org`` whose web pages may call
            the API); ``max_upload_mb=20``, ``max_megapixels=25`` (checked before decoding; also
            the decoded pixels all requests may hold at once), ``max_queue=32`` (more requests
            are answered 503 with ``Retry-After``), ``body_timeout=60``, ``header_timeout=10``,
            ``keep_alive=5``, ``shutdown_timeout=30`` (seconds); ``batch_size=4`` (most
            concurrent requests predicted in one forward pass), ``batch_wait_ms=5``.

    Raises:
        SegkitError: unreadable model, a limit that is not positive, an empty
            ``SEGKIT_API_KEY``, or a port that cannot be bound.

    Example:
        >>> import segkit
        >>> segkit.serve("runs/exp/best.pt", port=8080, device="cpu")  # until Ctrl+C
    """
    config = ServeConfig(**options)
    serve(
        model,
        config.serve_options(),
        host=config.host,
        port=config.port,
        workers=config.workers,
        limits=config.connection_limits(),
    )


def serve(
    checkpoint: str | Path,
    options: ServeOptions,
    *,
    host: str = ServeConfig.host,
    port: int = ServeConfig.port,
    workers: int = ServeConfig.workers,
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve ``checkpoint`` until SIGTERM/SIGINT; ``workers > 1`` starts that many processes.

    ``limits`` default to :class:`~segkit.serving.options.ConnectionLimits`'s defaults.

    Each worker process loads its own copy of the model (through
    :func:`~segkit.serving.app.app_from_env`). Without ``allowed_hosts`` in ``options``, a
    loopback address accepts loopback host names only
    (:func:`~segkit.serving.security.default_allowed_hosts`).

    Raises:
        SegkitError: unreadable checkpoint, invalid settings, or a port that cannot be bound.
    """
    limits = limits or ConnectionLimits()
    if options.allowed_hosts is None:
        options = replace(options, allowed_hosts=default_allowed_hosts(host))
    if options.api_key is None and not is_loopback(host):
        logger.warning(
            "WARNING: segkit serve listens on %s without an API key: anyone who can reach this port can use it. "
            "Set %s (or --api-key) to require one.",
            host,
            API_KEY_ENV,
        )
    if workers <= 1:
        run_server(uvicorn_config(create_app(checkpoint, options), host, port, 1, limits))
        return
    # fail here with a clear message, not in every worker
    predictor_to_serve(Path(checkpoint), replace(options, device="cpu"))
    os.environ.update({ENV_CHECKPOINT: str(Path(checkpoint).resolve()), ENV_OPTIONS: options.to_json()})
    run_server(uvicorn_config("segkit.serving.app:app_from_env", host, port, workers, limits))
