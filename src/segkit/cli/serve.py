"""``segkit serve``: an HTTP API and web page that segment uploaded images with a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.options import add_arguments, collect
from segkit.serving.options import ServeConfig  # light: no web framework


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
    add_arguments(parser, ServeConfig)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.serving.server import serve_model

    serve_model(args.checkpoint, **collect(args, ServeConfig))
    return 0
