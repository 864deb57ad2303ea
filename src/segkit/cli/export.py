"""``segkit export``: a checkpoint as an ONNX file that carries its preprocessing, or as a Hugging-Face-style folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.evaluate import add_data_options

FORMATS = ("onnx", "hf")
EXPORTERS = ("auto", "dynamo", "torchscript")  # as segkit.exporters.onnx.EXPORTERS, without importing torch
QUANTIZE_CHOICES = ("int8",)  # as segkit.exporters.quantize.QUANTIZE_CHOICES, without importing onnxruntime


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
    parser.add_argument("--out", type=Path, required=True, metavar="FILE|DIR", help="output file (.onnx) or folder (hf)")
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
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID",
        help="with --format hf: also upload the folder to this Hugging Face Hub repository (needs huggingface_hub "
        "and a token: HF_TOKEN or `hf auth login`)",
    )
    quantize = add_data_options(parser, "int8 quantization")
    quantize.add_argument(
        "--quantize", choices=QUANTIZE_CHOICES,
        help="int8: static quantization (ONNX Runtime, QDQ, per-channel int8 weights) calibrated on --calibration",
    )
    quantize.add_argument("--calibration", type=Path, metavar="DATA", help="labelled dataset folder to calibrate and score on")
    quantize.add_argument("--classes", metavar="FILE|a,b,c", help="the calibration data's class names (as segkit train)")
    quantize.add_argument(
        "--calibration-images", type=int, default=64, metavar="N", help="images calibrating the ranges (default 64)"
    )
    quantize.add_argument(
        "--max-drop", type=float, default=0.01, metavar="D",
        help="refuse the int8 model when its mIoU is more than D below the fp32 model's (default 0.01)",
    )
    quantize.add_argument("--force", action="store_true", help="keep an int8 model over --max-drop, with a warning")
    parser.set_defaults(func=run, export_parser=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.export_parser
    if args.opset < 7:
        parser.error(f"--opset must be at least 7, not {args.opset}")
    quantizing = args.quantize is not None
    if quantizing != (args.calibration is not None):
        parser.error("--quantize and --calibration DATA go together")
    given = [name for name in ("split", "masks", "colors", "classes", "force") if getattr(args, name)]
    if given and not quantizing:
        parser.error(f"{', '.join('--' + name for name in given)} only apply with --quantize")
    if args.push_to_hub and args.format != "hf":
        parser.error("--push-to-hub needs --format hf")
    if quantizing and args.format != "onnx":
        parser.error("--quantize writes an ONNX model: use --format onnx")
    if quantizing:
        return _quantize(args)

    if args.format == "hf":
        from segkit.exporters.hf import export_hf, push_to_hub

        folder = export_hf(args.checkpoint, args.out, overwrite=args.overwrite)
        print(f"wrote {folder} (model.safetensors, config.json, README.md)")
        if args.push_to_hub:
            print(f"uploaded to {push_to_hub(folder, args.push_to_hub)}")
        return 0
    from segkit.exporters.onnx import export_onnx

    result = export_onnx(
        args.checkpoint, args.out, opset=args.opset, dynamic=args.dynamic, exporter=args.exporter,
        overwrite=args.overwrite,
    )
    print(result.format())
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from segkit.exporters.quantize import quantize_onnx

    result = quantize_onnx(
        args.checkpoint, args.out, args.calibration, split=args.split, masks=args.masks, colors=args.colors,
        classes=args.classes, calibration_images=args.calibration_images, max_drop=args.max_drop, force=args.force,
        overwrite=args.overwrite, export_options={"opset": args.opset, "dynamic": args.dynamic, "exporter": args.exporter},
    )
    print(result.format())
    return 0
