"""``segkit suggest MODEL UNLABELED...``: which unlabelled images to label next, with pre-labels to correct."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.option_groups import add_prediction_options, prediction_options


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "suggest",
        help="rank unlabelled images by how much labelling them would help the model",
        description=(
            "Predict every UNLABELED image at its original size and rank them by the model's uncertainty "
            "(per-pixel entropy), weighted toward the classes it does worst on (the checkpoint's validation "
            "IoU) and spread out so that the picks are not alike. Prints the ranking; --out DIR also writes "
            "the picked images with the model's masks as labelme pre-labels (correct them in labelme, then "
            "segkit convert labelme), suggestions.csv/.json and a contact sheet."
        ),
    )
    parser.add_argument("model", type=Path, help="trained checkpoint (.pt), exported model (.onnx) or model folder")
    parser.add_argument("unlabeled", nargs="+", metavar="UNLABELED", help="image files, folders or globs")
    parser.add_argument("--count", type=int, default=10, metavar="N", help="images to pick (default %(default)s)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="write the picks, their pre-labels and a contact sheet")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the ranking as JSON (a list, best first)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_prediction_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.labelling.suggest import suggest

    result = suggest(
        args.model,
        args.unlabeled,
        count=args.count,
        out=args.out,
        json=args.json,
        overwrite=args.overwrite,
        **prediction_options(args),
    )
    print(result.format())
    return 0
