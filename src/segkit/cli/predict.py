"""``segkit predict``: masks for images with a trained checkpoint, at each image's size."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segkit.cli.option_groups import add_prediction_options, prediction_options
from segkit.options import add_arguments, collect
from segkit.prediction.options import OutputOptions  # light: no torch

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict masks for images with a checkpoint",
        description=(
            "Predict a mask for every input image and write DIR/<stem>.png: a palette PNG of class "
            "indices at the image's original size. INPUT may be files, folders (their images, sorted) "
            "or quoted globs ('photos/**/*.jpg'). Unreadable images are all named at once (exit 2) and the "
            "others' masks written; outputs appear together, once every readable image is done; "
            "other files in DIR are kept."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="trained checkpoint (.pt) or `segkit export` model (.onnx)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    add_arguments(parser, OutputOptions)
    add_prediction_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.prediction.writer import PredictionSummary, predict

    summary = predict(
        args.checkpoint,
        args.inputs,
        args.out,
        **collect(args, OutputOptions),
        **prediction_options(args),
    )
    assert isinstance(summary, PredictionSummary)  # masks are written to a folder, not returned
    print(summary.format())
    logger.info("wrote %d masks to %s", summary.num_images, args.out)
    return 0
