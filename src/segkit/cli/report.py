"""``segkit report RUN_DIR``: a self-contained HTML report of a training run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

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
    parser.add_argument("--data", type=Path, metavar="DATA", help="evaluate on this dataset instead of the run's")
    parser.add_argument(
        "--val-split",
        type=float,
        metavar="F",
        help="with --data: only the images `segkit train --val-split F` held out",
    )
    parser.add_argument("--worst", type=int, default=8, metavar="K", help="worst images shown (default 8)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per forward pass (default 8)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda:N, mps (default auto)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.evaluation.run_report import report_run

    out = report_run(
        args.run_dir,
        args.out,
        data=args.data,
        val_split=args.val_split,
        worst=args.worst,
        device=args.device,
        batch_size=args.batch_size,
    )
    print(f"wrote {out}")
    return 0
