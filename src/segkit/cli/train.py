"""``segkit train DATA``: train a model on a folder of images and masks.

The options are generated from :class:`segkit.config.TrainConfig`'s fields; the
ones not given are derived by the planner (``--no-plan``: the plain defaults).
"""

from __future__ import annotations

import argparse

from segkit.options import add_arguments, collect


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from segkit.config import TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="train a model",
        description="Train a segmentation model; writes checkpoints, plan, curves and samples to --out. "
        "Options you do not set are chosen by the planner from the data, the machine and --time-budget.",
    )
    parser.add_argument(
        "data", nargs="?", help="training data folder (labelme, images/+masks/, VOC, or with train/ val/)"
    )
    add_arguments(parser, TrainConfig)
    parser.add_argument(
        "--config", metavar="FILE", help="YAML file of options (keys as in config.yaml); command-line options win"
    )
    parser.add_argument("--plan-only", action="store_true", help="print the plan and stop")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from segkit.config import TrainConfig, resolve_options
    from segkit.training.trainer import train

    options = collect(args, TrainConfig)
    if args.data is not None:
        options["data"] = args.data
    config = resolve_options(options, args.config)
    if args.plan_only:
        from segkit.training.race import plan_training

        print(plan_training(config).format())
        return 0
    result = train(config)
    print(f"best checkpoint: {result.best_checkpoint}")
    print(f"last checkpoint: {result.last_checkpoint}")
    print(
        f"history: {result.out / 'history.csv'}, curves: {result.out / 'curves.png'}, samples: {result.out / 'samples'}"
    )
    miou = result.best_metrics.get("mIoU")
    print(f"best validation mIoU: {miou:.4f}" if miou is not None else "best validation mIoU: n/a")
    return 0
