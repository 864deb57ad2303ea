"""``segkit export``: a checkpoint as an ONNX file that carries its preprocessing, or as a Hugging-Face-style folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.option_groups import add_data_options, data_options
from segkit.exporters.options import (  # light: no torch, no onnx
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_MAX_DROP,
    DEFAULT_OPSET,
    EXPORTERS,
    FORMATS,
    QUANTIZE_CHOICES,
)


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
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format: onnx (default) or hf")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE|DIR", help="output file (.onnx) or folder (hf)"
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s; below 18 uses torchscript)"
    )
    parser.add_argument(
        "--dynamic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="free batch, height and width (default); --no-dynamic fixes 1 x 3 x img_size",
    )
    parser.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="auto",
        help="torch.onnx exporter: dynamo (torch.export), torchscript (legacy tracer) or auto (default: "
        "dynamo, falling back to torchscript)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="with --format hf: also upload the folder to this Hugging Face Hub repository (needs huggingface_hub "
        "and a token: HF_TOKEN or `hf auth login`)",
    )
    quantize = add_data_options(parser, "int8 quantization")
    quantize.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        help="int8: static quantization (ONNX Runtime, QDQ, per-channel int8 weights) calibrated on --calibration",
    )
    quantize.add_argument(
        "--calibration", type=Path, metavar="DATA", help="labelled dataset folder to calibrate and score on"
    )
    quantize.add_argument(
        "--classes", metavar="FILE|a,b,c", help="the calibration data's class names (as segkit train)"
    )
    quantize.add_argument(
        "--calibration-images",
        type=int,
        default=DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help="images calibrating the ranges (default %(default)s)",
    )
    quantize.add_argument(
        "--max-drop",
        type=float,
        default=DEFAULT_MAX_DROP,
        metavar="D",
        help="refuse the int8 model when its mIoU is more than D below the fp32 model's (default 0.01)",
    )
    quantize.add_argument("--force", action="store_true", help="keep an int8 model over --max-drop, with a warning")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.exporters.export import export

    result = export(
        args.checkpoint,
        args.out,
        format=args.format,
        opset=args.opset,
        dynamic=args.dynamic,
        exporter=args.exporter,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        quantize=args.quantize,
        calibration=args.calibration,
        **data_options(args),
        classes=args.classes,
        calibration_images=args.calibration_images,
        max_drop=args.max_drop,
        force=args.force,
    )
    print(result.format())
    return 0
