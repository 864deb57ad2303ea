"""``segkit serve``: an HTTP API and web page that segment uploaded images with a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.serving.options import MEBIBYTE, ConnectionLimits, ServeOptions  # light: no web framework

DEFAULTS = ServeOptions()
DEFAULT_LIMITS = ConnectionLimits()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="HTTP API + web page segmenting uploaded images",
        description=(
            "Serve a checkpoint over HTTP: POST /predict (mask PNG, ?format=json or ?format=overlay), "
            "GET /info, GET /health, the web page at / and the API docs at /docs. "
            "SIGTERM or Ctrl+C stops accepting connections, finishes the requests in flight and exits 0."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="trained checkpoint (.pt) or exported model (.onnx)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default auto)")

    access = parser.add_argument_group("access")
    access.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on /predict and /info (default: the SEGKIT_API_KEY "
        "environment variable, which keeps the key out of the process list; none when unset)",
    )
    access.add_argument(
        "--allowed-hosts",
        nargs="+",
        metavar="HOST",
        help="Host header names accepted, '*.example.org' wildcards allowed "
        "(default: localhost names on a loopback --host, any otherwise)",
    )
    access.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages of ORIGIN (e.g. https://app.example.org) call the API; repeatable (default: none)",
    )

    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULTS.max_upload_bytes / MEBIBYTE,
        metavar="MB",
        help="largest accepted upload in MiB (default %(default)g)",
    )
    limits.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULTS.max_pixels / 1_000_000,
        metavar="MP",
        help="largest accepted image, checked before decoding; also the decoded pixels all requests "
        "may hold at once, which bounds memory (default %(default)g)",
    )
    limits.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULTS.max_queue,
        metavar="N",
        help="requests held at once; more are answered 503 with Retry-After (default %(default)s)",
    )
    timeouts = {
        "--body-timeout": (DEFAULTS.body_timeout_s, "seconds a request body may take"),
        "--header-timeout": (DEFAULT_LIMITS.header_timeout_s, "seconds request headers may take"),
        "--keep-alive": (DEFAULT_LIMITS.keep_alive_s, "seconds an idle connection stays open"),
        "--shutdown-timeout": (DEFAULT_LIMITS.shutdown_timeout_s, "seconds requests in flight get after SIGTERM"),
    }
    for flag, (default, meaning) in timeouts.items():
        limits.add_argument(flag, type=float, default=default, metavar="S", help=f"{meaning} (default %(default)g)")

    batching = parser.add_argument_group("batching")
    batching.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        metavar="N",
        help="most concurrent requests predicted in one forward pass; 1: one at a time "
        "(default %(default)s; a GPU profits from more)",
    )
    batching.add_argument(
        "--batch-wait-ms",
        type=float,
        default=DEFAULTS.batch_wait_ms,
        metavar="MS",
        help="how long a request waits for others to share its batch (default %(default)g)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.serving.server import serve_model

    serve_model(
        args.checkpoint,
        host=args.host,
        port=args.port,
        workers=args.workers,
        device=args.device,
        api_key=args.api_key,
        allowed_hosts=args.allowed_hosts,
        cors_origin=args.cors_origin,
        max_upload_mb=args.max_upload_mb,
        max_megapixels=args.max_megapixels,
        max_queue=args.max_queue,
        body_timeout=args.body_timeout,
        header_timeout=args.header_timeout,
        keep_alive=args.keep_alive,
        shutdown_timeout=args.shutdown_timeout,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
    )
    return 0
