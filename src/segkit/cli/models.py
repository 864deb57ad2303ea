"""``segkit models``: the registered architectures with their size and cost."""

from __future__ import annotations

import argparse
import json

COLUMNS = ("name", "family", "params", "GFLOPs@{size}", "stride", "pretrained", "paper")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model architectures",
        description=(
            "List the registered models with parameters (num_classes=2, default options), "
            "GFLOPs of one 1x3xSIZExSIZE forward pass (multiply-add = 2 FLOPs), output stride, "
            "whether the encoder can be ImageNet-pretrained, and the paper."
        ),
    )
    parser.add_argument("pattern", nargs="?", help="shell pattern filtering the names, e.g. 'unet*'")
    parser.add_argument("--size", type=int, default=512, help="input side for the FLOP count (default 512)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkit.models.registry import describe_models

    summaries = [summary.to_dict() for summary in describe_models(args.pattern, args.size)]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    header = [column.format(size=args.size) for column in COLUMNS]
    rows = [
        [
            item["name"],
            item["family"],
            f"{item['parameters'] / 1e6:.2f}M",
            f"{item['gflops']:.1f}",
            str(item["output_stride"] or "-"),
            "yes" if item["pretrained_encoder"] else "no",
            item["paper"],
        ]
        for item in summaries
    ]
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
