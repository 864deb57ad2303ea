"""``segkit demo``: the whole pipeline on synthetic data it generates itself."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the built-in demo",
        description="Generate a synthetic labelme dataset, convert it, plan and train a "
        "model on it within --time-budget, evaluate on held-out images and predict them.",
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--time-budget", default="120s", help="training time (default 120s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segkit.config import parse_duration
    from segkit.demo import run_demo

    result = run_demo(args.out, parse_duration(args.time_budget), overwrite=args.overwrite, device=args.device)
    out = result.out
    print()
    print(f"demo finished in {result.seconds:.0f} s; outputs in {out}/")
    print(f"  labelme data (generated):  {out / 'labelme'}")
    print(f"  converted masks:           {out / 'dataset'}")
    print(f"  best checkpoint:           {result.checkpoint}")
    print(f"  curves and samples:        {out / 'run' / 'curves.png'}, {out / 'run' / 'samples'}")
    print(f"  test metrics (JSON):       {out / 'test_metrics.json'}")
    print(f"  predictions (+color/overlay): {result.predictions}")
    print(f"final mIoU on held-out images: {result.test_metrics['mIoU']:.4f}")
    return 0
