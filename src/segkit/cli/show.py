"""``segkit show MASK...``: write colour previews (and overlays) of mask files."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="colour mask files (and overlay them on their images) for a quick look",
        description="Write <stem>_color.png for each MASK in the dataset's colours (a colour table, or the class "
        "names in a class file beside the masks' folder; else the VOC palette, 255 white) and, with --overlay, "
        "<stem>_overlay.png blended onto the image.",
    )
    parser.add_argument("masks", nargs="+", metavar="MASK", help="mask files (values as stored are the class ids)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: beside each mask)")
    parser.add_argument(
        "--overlay",
        metavar="IMAGE",
        help="image to blend the colours onto: a file, or a folder holding an image with each mask's name",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours (default 0.5)")
    parser.add_argument("--colors", metavar="FILE", help="colour table (JSON or CSV) to read RGB colour-coded masks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkit.data.masks import show_masks

    for mask in args.masks:
        written = show_masks(mask, out=args.out, overlay=args.overlay, alpha=args.alpha, colors=args.colors)
        print(" ".join(["wrote", *map(str, written)]))
    return 0
