"""``segkit weights``: which ImageNet encoder weights can be had on this machine."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "weights",
        help="list the ImageNet encoder weights available here",
        description="For every known encoder: the local file of its ImageNet weights (in $SEGKIT_WEIGHTS, the "
        "torch hub cache or the Hugging Face cache), or whether it can be downloaded, and the models using it.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per encoder")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import json

    from segkit.models.weights import encoder_users, weights_report

    rows = weights_report()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "encoder": status.encoder,
                        "path": str(status.path) if status.path else None,
                        "downloadable": status.downloadable,
                        "models": encoder_users(status.encoder),
                    }
                    for status in rows
                ],
                indent=2,
            )
        )
        return 0
    print(f"{'encoder':<16} {'models':<40} weights")
    for status in rows:
        print(f"{status.encoder:<16} {', '.join(encoder_users(status.encoder)):<40} {status.describe()}")
    return 0
