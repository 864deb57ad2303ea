"""``segkit evaluate``: metrics of a checkpoint on a dataset, or of predicted mask folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from segkit.cli.option_groups import add_data_options, add_prediction_options, data_options, prediction_options


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
    parser.add_argument("--pred", type=Path, metavar="DIR", help="folder of predicted index masks (<stem>.png)")
    parser.add_argument("--true", type=Path, metavar="DIR", help="folder of true masks with the same stems")
    parser.add_argument(
        "--classes",
        metavar="FILE|a,b,c",
        help="class names: with a checkpoint, the data's (as segkit train --classes); with --pred, one name per "
        "line (__ignore__ skipped) or a JSON/CSV colour table",
    )
    parser.add_argument(
        "--num-classes", type=int, metavar="N", help="with --pred: number of classes (default: largest value + 1)"
    )
    parser.add_argument(
        "--ignore-index",
        type=int,
        metavar="V",
        help="true value to ignore (default: the checkpoint's; 255 with --pred)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write all metrics as JSON (NaN as null)")
    data = add_data_options(parser, "data (with a checkpoint, as segkit train)")
    data.add_argument(
        "--val-split",
        type=float,
        metavar="F",
        help="only the images `segkit train --val-split F` held out (same split by name)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="also write a self-contained HTML report: metrics, confusion matrix, curves, per-image scores, worst images",
    )
    parser.add_argument(
        "--worst", type=int, default=8, metavar="K", help="with --report: worst images shown (default 8)"
    )
    add_prediction_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.evaluation.evaluate import evaluate
    from segkit.evaluation.report import format_table

    metrics = evaluate(
        args.checkpoint,
        args.data,
        pred=args.pred,
        true=args.true,
        classes=args.classes,
        num_classes=args.num_classes,
        ignore_index=args.ignore_index,
        json=args.json,
        report=args.report,
        worst=args.worst,
        val_split=args.val_split,
        **data_options(args),
        **prediction_options(args),
    )
    print(format_table(metrics))
    return 0
