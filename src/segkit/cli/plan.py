"""``segkit plan DATA``: the recipe ``segkit train`` would follow, with one reason per choice."""

from __future__ import annotations

import argparse

import segkit
from segkit.options import add_arguments, collect


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from segkit.config import TrainConfig

    parser = subparsers.add_parser(
        "plan",
        help="show the training plan for a dataset, this machine and a time budget",
        description="Fingerprint the training data, measure this device for a few seconds, and print the model, "
        "resolution, crops, batch size, precision, learning rate, loss and expected epochs `segkit train` would "
        "use, with a reason for each. Takes every option of `segkit train`; the ones given are kept as they are.",
    )
    parser.add_argument("data", help="training data folder")
    add_arguments(parser, TrainConfig)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (as plan.json)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import json

    from segkit.config import TrainConfig

    plan = segkit.plan(**collect(args, TrainConfig), data=args.data)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.format())
    return 0
