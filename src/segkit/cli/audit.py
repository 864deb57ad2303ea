"""``segkit audit DATA``: which masks are probably wrong, from out-of-sample (K-fold) probabilities."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.option_groups import add_data_options, add_prediction_options, data_options, prediction_options
from segkit.labelling.options import AuditOptions
from segkit.options import add_arguments, collect


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "audit",
        help="find the masks of a labelled dataset that are probably wrong",
        description=(
            "Score every mask of DATA by its label quality (cleanlab's segmentation score, times how well each "
            "object's outline agrees with the model's) under probabilities of a model that never saw it: K-fold "
            "training within --time-budget (each fold trains, planned, on the other folds' images and predicts "
            "its own at their original size), or --model (in-sample: "
            "optimistic). Each disputed region (a confident prediction the label contradicts) gets a kind: "
            "missing, extra, wrong_class or boundary. Prints the most suspect masks; --json writes the ranking "
            "(and a CSV beside it), --out DIR a page showing the most suspect images with the regions outlined."
        ),
    )
    parser.add_argument("data", type=Path, metavar="DATA", help="labelled dataset folder (as segkit train reads it)")
    add_arguments(parser, AuditOptions)
    add_data_options(parser, "data (as segkit train reads it)", split_default="the training split")
    add_prediction_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.labelling.audit import audit

    result = audit(args.data, **collect(args, AuditOptions), **data_options(args), **prediction_options(args))
    print(result.format())
    return 0
