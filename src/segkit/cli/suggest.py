"""``segkit suggest MODEL UNLABELED...``: which unlabelled images to label next, with pre-labels to correct."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.option_groups import add_prediction_options, prediction_options
from segkit.labelling.options import SuggestOptions
from segkit.options import add_arguments, collect


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
    add_arguments(parser, SuggestOptions)
    add_prediction_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.labelling.suggest import suggest

    result = suggest(
        args.model,
        args.unlabeled,
        **collect(args, SuggestOptions),
        **prediction_options(args),
    )
    print(result.format())
    return 0
