"""``segkit predict``: masks for images with a trained checkpoint, at each image's size."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict masks for images with a checkpoint",
        description=(
            "Predict a mask for every input image and write DIR/<stem>.png: a palette PNG of class "
            "indices at the image's original size. INPUT may be files, folders (their images, sorted) "
            "or quoted globs ('photos/**/*.jpg'). Outputs appear only when every image succeeded; "
            "other files in DIR are kept."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="trained checkpoint (.pt) or `segkit export` model (.onnx)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--color", action="store_true", help="also write DIR/<stem>_color.png (class colours)")
    parser.add_argument("--overlay", action="store_true", help="also write DIR/<stem>_overlay.jpg (colours on the image)")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the overlay colours (default 0.5)")
    parser.add_argument(
        "--format", choices=("png", "labelme"), default="png",
        help="png: DIR/<stem>.png index masks (default); labelme: DIR/<stem>.json labelme annotations (one polygon "
        "per region and class, mask shapes for regions with holes) and DIR/labels.txt, to correct in labelme; "
        "--out DIR may be the images' folder",
    )
    parser.add_argument(
        "--image-data", action="store_true", help="with --format labelme: embed the image in the JSON (imageData)"
    )
    parser.add_argument(
        "--polygon-tolerance", type=float, default=1.0, metavar="PX",
        help="with --format labelme: largest distance of a simplified polygon from the region's outline (default 1)",
    )
    parser.add_argument(
        "--min-area", type=int, default=16, metavar="PX",
        help="with --format labelme: regions of fewer pixels are left out (default 16)",
    )
    add_prediction_options(parser)
    parser.set_defaults(func=run, predict_parser=parser)
    return parser


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """How images are predicted: shared by ``segkit predict`` and ``segkit evaluate``, so what is scored is what is shipped."""
    group = parser.add_argument_group("prediction (as segkit predict)")
    group.add_argument(
        "--batch-size", type=int, default=8, help="images per forward pass (default 8; tile windows: at most 4)"
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default auto)")
    group.add_argument(
        "--threshold", type=float, metavar="T", help="binary checkpoints: foreground probability threshold"
    )
    group.add_argument(
        "--tile", type=_tile_size, default="auto", metavar="N|HxW",
        help="predict in overlapping N x N (or H x W) windows of original pixels, blended with a Gaussian "
        "weight; 0 never tiles; default auto: crop checkpoints tile images larger than 2 x img_size",
    )
    group.add_argument(
        "--overlap", type=float, default=0.25, help="fraction of a window shared with its neighbour (default 0.25)"
    )
    group.add_argument(
        "--tta", default="none", metavar="AUG",
        help="test-time augmentation: none (default), flip, vflip, scale or a combination such as flip+scale",
    )
    group.add_argument(
        "--crf", action="store_true",
        help="refine the probabilities with a dense CRF on the image colours (DeepLab v1/v2 post-processing; "
        "needs PyTorch)",
    )


def prediction_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The options of :func:`add_prediction_options` as ``Predictor.from_checkpoint`` keywords (with ``device``)."""
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be between 0 and 1, not {args.threshold}")
    if not 0.0 <= args.overlap < 1.0:
        parser.error(f"--overlap must be at least 0 and below 1, not {args.overlap}")

    from segkit.prediction.tiling import TileConfig
    from segkit.prediction.tta import TTAConfig

    size = None if args.tile == "auto" else args.tile
    # Windows are up to 4x the network input's area: at most 4 per pass keeps a 4096x4096 image under 2 GiB.
    tiling = TileConfig(size, auto=args.tile == "auto", overlap=args.overlap, batch_size=min(args.batch_size, 4))
    return {
        "device": args.device, "batch_size": args.batch_size, "tiling": tiling, "tta": TTAConfig.parse(args.tta),
        "crf": args.crf, "threshold": args.threshold,
    }


def _tile_size(text: str) -> str | tuple[int, int] | None:
    """``auto`` -> ``"auto"``; ``0`` -> ``None`` (never tile); ``512`` or ``512x768`` -> ``(height, width)``."""
    if text == "auto":
        return text
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected auto, 0, N or HxW, got {text!r}")
    sides = [int(part) for part in parts]
    if sides == [0]:
        return None
    if 0 in sides:
        raise argparse.ArgumentTypeError(f"window sides must be positive, got {text!r}")
    return (sides[0], sides[-1])


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.predict_parser
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be between 0 and 1, not {args.alpha}")
    if args.format != "labelme" and (args.image_data or args.polygon_tolerance != 1.0 or args.min_area != 16):
        parser.error("--image-data, --polygon-tolerance and --min-area apply with --format labelme")
    if args.polygon_tolerance < 0 or args.min_area < 0:
        parser.error("--polygon-tolerance and --min-area must be at least 0")
    options = prediction_options(args, parser)

    from segkit.prediction.writer import predict_files

    labelme = None
    if args.format == "labelme":
        from segkit.prediction.labelme_export import LabelmeOptions

        labelme = LabelmeOptions(tolerance=args.polygon_tolerance, min_area=args.min_area, image_data=args.image_data)
    summary = predict_files(
        args.checkpoint, args.inputs, args.out, color=args.color, overlay_images=args.overlay, alpha=args.alpha,
        labelme=labelme, **options,
    )
    print(summary.format())
    logger.info("wrote %d masks to %s", summary.num_images, args.out)
    return 0
