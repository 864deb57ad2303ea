"""``segkit show MASK...``: write colour previews (and overlays) of mask files."""

from __future__ import annotations

import argparse

from segkit.data.options import ShowOptions
from segkit.options import add_arguments, collect


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="colour mask files (and overlay them on their images) for a quick look",
        description="Write <stem>_color.png for each MASK in the dataset's colours (a colour table, or the class "
        "names in a class file beside the masks' folder; else the VOC palette, 255 white) and, with --overlay, "
        "<stem>_overlay.png blended onto the image.",
    )
    parser.add_argument("masks", nargs="+", metavar="MASK", help="mask files (values as stored are the class ids)")
    add_arguments(parser, ShowOptions)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkit.data.masks import show_masks

    options = collect(args, ShowOptions)
    for mask in args.masks:
        written = show_masks(mask, **options)
        print(" ".join(["wrote", *map(str, written)]))
    return 0
