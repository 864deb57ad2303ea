"""``segkit report RUN_DIR``: a self-contained HTML report of a training run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segkit.evaluation.options import ReportOptions  # light: no torch
from segkit.options import add_arguments, collect

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="HTML report of a training run: metrics, confusion matrix, curves, worst images",
        description=(
            "Evaluate RUN_DIR/best.pt on the run's validation images (as the run chose them: --val, a val split, "
            "or the --val-split share held out by name) at each image's original size, and write one "
            "self-contained HTML file (default RUN_DIR/report.html) with the model card, the metrics per class, "
            "the confusion matrix, the training curves, per-image scores and the worst images."
        ),
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="training run folder (segkit train --out)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="HTML file to write (default RUN_DIR/report.html)")
    add_arguments(parser, ReportOptions)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.evaluation.run_report import report_run

    out = report_run(args.run_dir, args.out, **collect(args, ReportOptions))
    print(f"wrote {out}")
    return 0
