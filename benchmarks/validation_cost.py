"""How well one validation image's time predicts the others': by the image's pixels or the network's.

A run times validation on one image and extrapolates to the images it will score (to size
validation to the budget and to expect its epochs). For each trained run given, this script
times the validation of every validation image on its own (the best of two), then takes each
image in turn as the one measured and extrapolates the total time of all of them three ways:
per original pixel; per pixel the network computes
(:meth:`segkit.prediction.tiling.TileConfig.network_pixels`: a letterboxed image costs its input
size, a tiled one its overlapping windows); and as the race does (:class:`segkit.training.budget.
ValidationCost`: network and image pixels, with a second image timed when their mix differs).
Prints the median and largest relative error of each.

    python benchmarks/validation_cost.py runs/dubai runs/human ...

Each run folder needs ``best.pt`` and the ``config.yaml`` it was trained with (its data and
validation split are opened as training opened them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from segkit.config import TrainConfig
from segkit.prediction.predictor import load_predictor
from segkit.training.budget import ValidationCost, image_to_time_too, validation_pixels, validation_sizes
from segkit.training.builders import open_training_data
from segkit.training.validation import validate_model


def errors(costs: list[float], seconds: list[float]) -> list[float]:
    """Relative error of the total time extrapolated from each image in turn by ``costs``."""
    total_cost, total_seconds = sum(costs), sum(seconds)
    return [abs(total_cost * took / cost / total_seconds - 1) for cost, took in zip(costs, seconds)]


def race_errors(pixels: dict[int, tuple[int, int]], seconds: dict[int, float]) -> list[float]:
    """Relative error of the total time as the race predicts it from each image in turn (and the image it
    times beside it, :func:`~segkit.training.budget.image_to_time_too`)."""
    total, result = sum(seconds.values()), []
    for first in pixels:
        second = image_to_time_too(pixels, first)
        cost = ValidationCost.fit(
            (pixels[first], seconds[first]), None if second is None else (pixels[second], seconds[second])
        )
        result.append(abs(sum(cost.seconds(p) for p in pixels.values()) / total - 1))
    return result


def measure(run: Path) -> dict[str, Any]:
    config = TrainConfig.from_yaml(run / "config.yaml")
    data = open_training_data(config)
    predictor = load_predictor(run / "best.pt", device="cpu")
    sizes = validation_sizes(data.val_source, data.val_indices)
    pixels = validation_pixels(sizes, predictor.card.preprocess)
    device = torch.device("cpu")
    validate_model(predictor.model, predictor.card, data.val_source, data.val_indices[:1], device=device)  # warm-up
    seconds = [
        min(
            validate_model(predictor.model, predictor.card, data.val_source, [index], device=device).seconds
            for _ in range(2)
        )
        for index in data.val_indices
    ]
    by_image = errors([pixels[index][1] for index in data.val_indices], seconds)
    by_network = errors([pixels[index][0] for index in data.val_indices], seconds)
    by_both = race_errors(pixels, dict(zip(data.val_indices, seconds)))
    return {
        "run": str(run),
        "images": len(seconds),
        "seconds": [round(min(seconds), 3), round(max(seconds), 3)],
        "image_pixels_error": {"median": statistics.median(by_image), "max": max(by_image)},
        "network_pixels_error": {"median": statistics.median(by_network), "max": max(by_network)},
        "race_error": {"median": statistics.median(by_both), "max": max(by_both)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="trained run folders (best.pt, config.yaml)")
    args = parser.parse_args(argv)
    results = [measure(run) for run in args.runs]
    print(json.dumps(results, indent=2))
    print("| run | images | seconds each | median / largest error: by image pixels | by network pixels | as the race |")
    print("|---|---|---|---|---|---|")
    for r in results:
        errors_text = " | ".join(
            f"{r[key]['median']:.2f} / {r[key]['max']:.2f}"
            for key in ("image_pixels_error", "network_pixels_error", "race_error")
        )
        print(f"| {r['run']} | {r['images']} | {r['seconds'][0]}–{r['seconds'][1]} s | {errors_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
