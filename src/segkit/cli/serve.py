"""``segkit serve``: an HTTP API and web page that segment uploaded images with a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="HTTP API + web page segmenting uploaded images",
        description=(
            "Serve a checkpoint over HTTP: POST /predict (mask PNG, ?format=json or ?format=overlay), "
            "GET /info, GET /health, the web page at / and the API docs at /docs."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="trained checkpoint (.pt)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default auto)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=20.0, metavar="MB", help="largest accepted upload in MiB (default 20)"
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=50.0,
        metavar="MP",
        help="largest accepted image in megapixels, checked before decoding (default 50)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.errors import SegkitError
    from segkit.serve.app import serve

    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise SegkitError(None, "--max-upload-mb and --max-megapixels must be positive")
    serve(
        args.checkpoint,
        host=args.host,
        port=args.port,
        workers=args.workers,
        device=args.device,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
    )
    return 0
