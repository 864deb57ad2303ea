"""``segkit evaluate``: metrics of a checkpoint on a dataset, or of predicted mask folders."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segkit.cli.predict import add_prediction_options, prediction_options

logger = logging.getLogger(__name__)


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
        "--classes", metavar="FILE|a,b,c",
        help="class names: with a checkpoint, the data's (as segkit train --classes); with --pred, one name per "
        "line (__ignore__ skipped) or a JSON/CSV colour table",
    )
    parser.add_argument(
        "--num-classes", type=int, metavar="N", help="with --pred: number of classes (default: largest value + 1)"
    )
    parser.add_argument(
        "--ignore-index", type=int, metavar="V",
        help="true value to ignore (default: the checkpoint's; 255 with --pred)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write all metrics as JSON (NaN as null)")
    data = add_data_options(parser, "data (with a checkpoint, as segkit train)")
    data.add_argument(
        "--val-split", type=float, metavar="F",
        help="only the images `segkit train --val-split F` held out (same split by name)",
    )
    parser.add_argument(
        "--report", type=Path, metavar="FILE",
        help="also write a self-contained HTML report: metrics, confusion matrix, curves, per-image scores, worst images",
    )
    parser.add_argument("--worst", type=int, default=8, metavar="K", help="with --report: worst images shown (default 8)")
    add_prediction_options(parser)
    parser.set_defaults(func=run, evaluate_parser=parser)
    return parser


def add_data_options(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """How a labelled dataset folder is read (as ``segkit train``): ``--split``, ``--masks``, ``--colors``.

    ``--classes`` is the command's own (its meaning differs with ``--pred``).
    """
    group = parser.add_argument_group(title)
    group.add_argument("--split", metavar="NAME", help="split of a dataset with splits (default: val, valid, validation, test)")
    group.add_argument("--masks", metavar="DIRNAME", help="mask folder beside images/, e.g. masks_rgb (default masks)")
    group.add_argument("--colors", metavar="FILE", help="colour table (JSON or CSV) of RGB colour-coded masks")
    return group


CHECKPOINT_ONLY = ("split", "val_split", "masks", "colors", "tta", "crf", "threshold")


def _validate(args: argparse.Namespace) -> None:
    """Exactly one of the two forms, with the options that belong to it."""
    parser: argparse.ArgumentParser = args.evaluate_parser
    checkpoint_form = args.checkpoint is not None
    folder_form = args.pred is not None or args.true is not None
    complete = args.data is not None if checkpoint_form else args.pred is not None and args.true is not None
    if checkpoint_form == folder_form or not complete:
        parser.error("give either CHECKPOINT DATA or --pred DIR --true DIR")
    if checkpoint_form and args.num_classes is not None:
        parser.error("--num-classes only applies with --pred/--true (a checkpoint knows its classes)")
    given = [name for name in CHECKPOINT_ONLY if getattr(args, name) not in (None, False, "none")]
    if folder_form and (given or args.tile != "auto"):
        names = ", ".join(f"--{name.replace('_', '-')}" for name in given + ["tile"] * (args.tile != "auto"))
        parser.error(f"{names} only apply with CHECKPOINT DATA")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    from segkit.evaluation.per_image import PerImageScores
    from segkit.evaluation.report import format_table, write_json

    scores = PerImageScores(args.worst) if args.report is not None else None
    if args.pred is not None:
        from segkit.evaluation.folders import evaluate_folders

        metrics = evaluate_folders(
            args.pred,
            args.true,
            class_names=args.classes,
            ignore_index=255 if args.ignore_index is None else args.ignore_index,
            num_classes=args.num_classes,
            on_image=scores,
        )
    else:
        from segkit.evaluation.evaluate import evaluate_checkpoint

        metrics = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            ignore_index=args.ignore_index,
            split=args.split,
            val_split=args.val_split,
            masks=args.masks,
            colors=args.colors,
            classes=args.classes,
            on_image=scores,
            **prediction_options(args, args.evaluate_parser),
        )
    print(format_table(metrics))
    if args.json is not None:
        write_json(metrics, args.json)
        logger.info("wrote %s", args.json)
    if args.report is not None:
        from segkit.evaluation.html_report import write_evaluation_report

        write_evaluation_report(
            args.report, metrics, scores, checkpoint=args.checkpoint, data=args.data, pred=args.pred, true=args.true,
            classes=args.classes, ignore_index=args.ignore_index, val_split=args.val_split,
        )
        logger.info("wrote %s", args.report)
    return 0
