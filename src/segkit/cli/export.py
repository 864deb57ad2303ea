"""``segkit export``: a checkpoint as an ONNX file that carries its preprocessing, or as a Hugging-Face-style folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.option_groups import add_data_options, data_options
from segkit.exporters.options import QUANTIZE_GROUP, ExportOptions  # light: no torch, no onnx
from segkit.options import add_arguments, collect


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or a Hugging-Face-style folder",
        description=(
            "Write the checkpoint's network as an ONNX graph (input 'image': normalised float32 N x 3 x H x W; "
            "output 'logits': N x C x H x W) with classes, palette and preprocessing as JSON in its "
            "metadata_props['segkit']. The file is checked with onnx.checker and ONNX Runtime's logits are "
            "compared with PyTorch's before it is written. `segkit predict MODEL.onnx ...` runs it. "
            "--quantize int8 --calibration DATA writes a statically quantized int8 ONNX model instead, after "
            "scoring the fp32 and int8 models on DATA's labelled images. "
            "--format hf writes a folder instead: model.safetensors, config.json (the model card) and a README "
            "model card; every command takes the folder as a model, and --push-to-hub uploads it."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="trained checkpoint (.pt), or an fp32 .onnx with --quantize")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE|DIR", help="output file (.onnx) or folder (hf)"
    )
    quantize = add_data_options(parser, QUANTIZE_GROUP)
    add_arguments(parser, ExportOptions, groups={QUANTIZE_GROUP: quantize})
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.exporters.export import export

    result = export(args.checkpoint, args.out, **data_options(args), **collect(args, ExportOptions))
    print(result.format())
    return 0
