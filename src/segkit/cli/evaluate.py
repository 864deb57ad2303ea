"""``segkit evaluate``: metrics of a checkpoint on a dataset, or of predicted mask folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.option_groups import add_prediction_options, prediction_options
from segkit.evaluation.options import EvaluateOptions  # light: no torch
from segkit.options import add_arguments, collect


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="pixel accuracy, IoU, Dice ... of a checkpoint or of predicted masks",
        description=(
            "Evaluate a checkpoint (.pt, or an exported .onnx) on a dataset (segkit evaluate CHECKPOINT DATA), "
            "predicting as segkit predict does with the same options, or a folder of predicted masks against "
            "true masks paired by file name (segkit evaluate --pred DIR --true DIR). Prints a per-class table "
            "and summary; --json writes every metric."
        ),
    )
    parser.add_argument("checkpoint", nargs="?", type=Path, metavar="CHECKPOINT", help="trained checkpoint (.pt/.onnx)")
    parser.add_argument("data", nargs="?", type=Path, metavar="DATA", help="dataset folder to evaluate it on")
    data = parser.add_argument_group("data (with a checkpoint, as segkit train)")
    add_arguments(parser, EvaluateOptions, groups={"data": data})
    add_prediction_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.evaluation.evaluate import evaluate
    from segkit.evaluation.report import format_table

    metrics = evaluate(
        args.checkpoint,
        args.data,
        **collect(args, EvaluateOptions),
        **prediction_options(args),
    )
    print(format_table(metrics))
    return 0
