"""``segkit predict``: masks for images with a trained checkpoint, at each image's size."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segkit.cli.option_groups import add_prediction_options, prediction_options
from segkit.prediction.options import DEFAULT_ALPHA

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
    parser.add_argument("--color", action="store_true", help="also write DIR/<stem>_color.png (class colours)")
    parser.add_argument(
        "--overlay", action="store_true", help="also write DIR/<stem>_overlay.jpg (colours on the image)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help="with --overlay: opacity of the overlay colours (default %(default)s)",
    )
    parser.add_argument(
        "--format",
        choices=("png", "labelme"),
        default="png",  # segkit.prediction.writer.FORMATS, not imported here
        help="png: DIR/<stem>.png index masks (default); labelme: DIR/<stem>.json labelme annotations (one polygon "
        "per region and class, mask shapes for regions with holes) and DIR/labels.txt, to correct in labelme; "
        "--out DIR may be the images' folder",
    )
    parser.add_argument(
        "--image-data", action="store_true", help="with --format labelme: embed the image in the JSON (imageData)"
    )
    parser.add_argument(
        "--polygon-tolerance",
        type=float,
        default=1.0,
        metavar="PX",
        help="with --format labelme: largest distance of a simplified polygon from the region's outline (default 1)",
    )
    parser.add_argument(
        "--min-area",
        type=int,
        default=16,
        metavar="PX",
        help="with --format labelme: regions of fewer pixels are left out (default 16)",
    )
    parser.add_argument(
        "--roi-masks",
        metavar="DIR|PATTERN",
        help="region-of-interest masks of the inputs: a folder (<stem>.*) or a pattern with {id} standing for each "
        "input's file name stem ('mask/{id}_mask.gif'); predictions outside them become the background class",
    )
    add_prediction_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.prediction.writer import PredictionSummary, predict

    summary = predict(
        args.checkpoint,
        args.inputs,
        args.out,
        color=args.color,
        overlay=args.overlay,
        alpha=args.alpha,
        format=args.format,
        image_data=args.image_data,
        polygon_tolerance=args.polygon_tolerance,
        min_area=args.min_area,
        roi_masks=args.roi_masks,
        **prediction_options(args),
    )
    assert isinstance(summary, PredictionSummary)  # masks are written to a folder, not returned
    print(summary.format())
    logger.info("wrote %d masks to %s", summary.num_images, args.out)
    return 0
