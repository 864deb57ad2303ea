"""``segkit inspect DATA``: report a dataset's pairs, sizes, classes, shares and problems."""

from __future__ import annotations

import argparse

from segkit.data.options import InspectOptions
from segkit.options import add_arguments, collect


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="report a dataset: pairs, image sizes, classes, pixel shares, problems",
        description="Read every image and mask of DATA once and report what was found. Problems "
        "(image without mask, unreadable file, size mismatch, unexpected values) are listed, not fatal.",
    )
    parser.add_argument(
        "data", metavar="DATA", help="dataset folder (labelme, images/+masks/, VOC, or with train/ val/)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_arguments(parser, InspectOptions)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from segkit.data.inspect import format_report, inspect_dataset

    report = inspect_dataset(
        args.data,
        **collect(args, InspectOptions),
        progress=not args.json and sys.stderr.isatty(),
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if "sheet" in report:
        print(f"contact sheet: {report['sheet']}", file=sys.stderr)
    return 0
