"""``segkit export``: a checkpoint as an ONNX file that carries its preprocessing."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("onnx",)
EXPORTERS = ("auto", "dynamo", "torchscript")  # as segkit.export.onnx.EXPORTERS, without importing torch


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX",
        description=(
            "Write the checkpoint's network as an ONNX graph (input 'image': normalised float32 N x 3 x H x W; "
            "output 'logits': N x C x H x W) with classes, palette and preprocessing as JSON in its "
            "metadata_props['segkit']. The file is checked with onnx.checker and ONNX Runtime's logits are "
            "compared with PyTorch's before it is written. `segkit predict MODEL.onnx ...` runs it."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="trained checkpoint (.pt)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="output file (.onnx)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18; below 18 uses torchscript)")
    parser.add_argument(
        "--dynamic", action=argparse.BooleanOptionalAction, default=True,
        help="free batch, height and width (default); --no-dynamic fixes 1 x 3 x img_size",
    )
    parser.add_argument(
        "--exporter", choices=EXPORTERS, default="auto",
        help="torch.onnx exporter: dynamo (torch.export), torchscript (legacy tracer) or auto (default: "
        "dynamo, falling back to torchscript)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=run, export_parser=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.export_parser
    if args.opset < 7:
        parser.error(f"--opset must be at least 7, not {args.opset}")

    from segkit.export.onnx import export_onnx

    result = export_onnx(
        args.checkpoint, args.out, opset=args.opset, dynamic=args.dynamic, exporter=args.exporter,
        overwrite=args.overwrite,
    )
    print(result.format())
    return 0
