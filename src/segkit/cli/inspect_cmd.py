"""``segkit inspect DATA``: report a dataset's pairs, sizes, classes, shares and problems."""

from __future__ import annotations

import argparse

from segkit.cli.option_groups import add_data_options, data_options


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
    parser.add_argument(
        "--classes",
        metavar="FILE|a,b",
        help="class names in index order: a,b,c or a file (.txt one per line, .json list or colour table, .csv)",
    )
    parser.add_argument("--ignore-index", type=int, default=255, help="mask value of unlabelled pixels (default 255)")
    add_data_options(parser, "data", split_default="the training split")
    parser.add_argument(
        "--sheet",
        metavar="FILE",
        help="also draw a contact sheet (PNG/JPEG): images beside their masks over them, "
        "with a legend, to see at a glance whether masks line up with images",
    )
    parser.add_argument("--sheet-count", type=int, default=16, metavar="N", help="images on the sheet (default 16)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from segkit.data.inspect import format_report, inspect_dataset

    report = inspect_dataset(
        args.data,
        **data_options(args),
        classes=args.classes,
        ignore_index=args.ignore_index,
        sheet=args.sheet,
        sheet_count=args.sheet_count,
        progress=not args.json and sys.stderr.isatty(),
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if "sheet" in report:
        print(f"contact sheet: {report['sheet']}", file=sys.stderr)
    return 0
