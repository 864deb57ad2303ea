"""``segkit convert FORMAT SRC OUT``: turn annotation folders into images/ + masks/."""

from __future__ import annotations

import argparse

from segkit.cli.option_groups import add_data_options, data_options
from segkit.data.options import ConvertLabelmeOptions, ConvertMasksOptions
from segkit.options import add_arguments, collect


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert annotations (labelme) into images/, masks/ and class_names.txt",
        description="Convert an annotation folder into images/, masks/ (index PNG), class_names.txt.",
    )
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    labelme = formats.add_parser(
        "labelme",
        help="a folder of labelme JSON files",
        description="Rasterise every labelme JSON of SRC (polygons, rectangles, circles, lines, points, masks) "
        "into OUT/images, OUT/masks (0 background, 255 = __ignore__), OUT/class_names.txt and "
        "OUT/visualization.",
    )
    labelme.add_argument("src", metavar="SRC", help="folder with labelme .json files and their images")
    labelme.add_argument("out", metavar="OUT", help="output folder (must not exist or be empty)")
    add_arguments(labelme, ConvertLabelmeOptions)
    masks = formats.add_parser(
        "masks",
        help="any dataset segkit reads, as images/ + index masks/ + class_names.txt",
        description="Write the dataset SRC as segkit reads it (with --images/--masks patterns, --fit-masks, "
        "--roi-masks, --colors, --label-map) into OUT: each image file copied, each mask as the class indices "
        "segkit trains on (fitted, regions applied, colours mapped), and class_names.txt: a fixed copy any tool reads.",
    )
    masks.add_argument("src", metavar="SRC", help="dataset folder")
    masks.add_argument("out", metavar="OUT", help="output folder (must not exist or be empty)")
    add_arguments(masks, ConvertMasksOptions)
    add_data_options(masks, "data", split_default="the training split")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkit.data.convert import convert_labelme, convert_masks

    if args.format == "masks":
        result = convert_masks(args.src, args.out, **collect(args, ConvertMasksOptions), **data_options(args))
    else:
        result = convert_labelme(args.src, args.out, **collect(args, ConvertLabelmeOptions))
    print(result.format())
    return 0
