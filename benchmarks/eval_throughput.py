"""Evaluation throughput: ``segkit evaluate --pred --true`` and segkit's confusion matrix vs a per-class loop.

Truth: the Dubai aerial index masks (classes 0-5, 255 ignored). Predictions: a
perturbed copy written to a temporary folder (shifted by a few pixels, 10 % of the
pixels set to a random class). Megapixels of truth per second, side by side and
taking turns, as medians of ``--repeats``:

- end to end, decoding included: :func:`segkit.evaluation.folders.evaluate_folders`
  (what ``segkit evaluate --pred DIR --true DIR --classes classes.json`` runs) vs
  a loop that decodes each pair with PIL and counts, per class, true positives,
  false positives and false negatives with numpy;
- in memory, on the decoded masks: :class:`segkit.evaluation.confusion.ConfusionMatrix`
  (``update`` per image, then ``compute``) vs the same per-class loop.

Every arm's per-class IoU, Dice and pixel accuracy are checked to be the same numbers.

Then whole processes, start-up included (issue 12's target): ``segkit evaluate
--pred DIR --true DIR`` against a script running the per-class loop, over
``--pairs`` mask pairs of 512 x 512 (crops of the Dubai masks, perturbed as
above), each a fresh process, taking turns. segkit runs under ``--light-python``
(the interpreter of a ``pip install "segkit[onnx]"`` environment, without
PyTorch; default: this one, whose folder evaluation imports no PyTorch either).

    python benchmarks/eval_throughput.py                 # full run (about 2 min on 2 cores)
    python benchmarks/eval_throughput.py --quick --no-report
    python benchmarks/eval_throughput.py --light-python /tmp/light/bin/python
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import (  # noqa: E402
    DUBAI,
    add_common_arguments,
    data_root,
    dataset_dir,
    finish,
    log,
    measure_interleaved,
    median,
    rate_summary,
    ratio,
    resolve_repeats,
    setup_logging,
)

SECTION = "Evaluation throughput (benchmarks/eval_throughput.py)"
TARGET_IN_MEMORY = 50.0
TARGET_END_TO_END = 3.0
TARGET_PROCESSES = 3.0
CROP = 512  # side of the mask pairs of the process arms
IGNORE = 255
SHIFT = 3  # pixels the predictions are shifted by (boundary errors)
NOISE = 0.10  # share of prediction pixels set to a random class


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repeats=5)
    parser.add_argument("--masks", type=int, default=None, help="number of Dubai masks used (default all 72, quick 6)")
    parser.add_argument(
        "--pairs", type=int, default=None, help="512x512 pairs of the process arms (default 300, quick 20)"
    )
    parser.add_argument(
        "--light-python",
        type=Path,
        default=Path(sys.executable),
        help="python of a segkit[onnx] environment for the `segkit evaluate` process (default: this one)",
    )
    args = parser.parse_args(argv)
    if args.masks is None:
        args.masks = 6 if args.quick else 0
    if args.pairs is None:
        args.pairs = 20 if args.quick else 300
    return args


# -------------------------------------------------------------------------- data
def perturb(truth: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: the truth shifted, ignored pixels and ``NOISE`` of all pixels given random classes."""
    prediction = np.roll(truth, (SHIFT, -SHIFT), axis=(0, 1))
    unlabelled = prediction >= num_classes
    prediction[unlabelled] = rng.integers(0, num_classes, int(unlabelled.sum()), dtype=np.uint8)
    noisy = rng.random(truth.shape) < NOISE
    prediction[noisy] = rng.integers(0, num_classes, int(noisy.sum()), dtype=np.uint8)
    return prediction


def build_folders(source: Path, count: int, num_classes: int, work: Path) -> tuple[Path, Path]:
    """``work/true`` (copies of the first ``count`` truth masks, 0 = all) and ``work/pred`` (perturbed, L PNG)."""
    true_dir, pred_dir = work / "true", work / "pred"
    true_dir.mkdir()
    pred_dir.mkdir()
    rng = np.random.default_rng(0)
    masks = sorted(path for path in source.iterdir() if path.suffix == ".png")
    for path in masks[:count] if count else masks:
        shutil.copy(path, true_dir / path.name)
        with Image.open(path) as opened:
            truth = np.asarray(opened)
        Image.fromarray(perturb(truth, num_classes, rng)).save(pred_dir / path.name)
    return pred_dir, true_dir


def build_crops(source: Path, count: int, num_classes: int, work: Path) -> tuple[Path, Path]:
    """``work/crop_true`` and ``work/crop_pred``: ``count`` random 512 x 512 crops of the truth masks, perturbed."""
    true_dir, pred_dir = work / "crop_true", work / "crop_pred"
    true_dir.mkdir()
    pred_dir.mkdir()
    rng = np.random.default_rng(1)
    masks = []
    for path in sorted(path for path in source.iterdir() if path.suffix == ".png"):
        with Image.open(path) as opened:
            if min(opened.size) >= CROP:
                masks.append(np.asarray(opened))
    for index in range(count):
        mask = masks[index % len(masks)]
        top, left = (int(rng.integers(side - CROP + 1)) for side in mask.shape[:2])
        truth = np.ascontiguousarray(mask[top : top + CROP, left : left + CROP])
        Image.fromarray(truth).save(true_dir / f"crop_{index:04d}.png")
        Image.fromarray(perturb(truth, num_classes, rng)).save(pred_dir / f"crop_{index:04d}.png")
    return pred_dir, true_dir


LOOP_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
pred_dir, true_dir, num_classes = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
tp, fp, fn = [0] * num_classes, [0] * num_classes, [0] * num_classes
for true_path in sorted(true_dir.iterdir()):
    prediction, truth = np.asarray(Image.open(pred_dir / true_path.name)), np.asarray(Image.open(true_path))
    labelled = truth != 255
    for c in range(num_classes):
        predicted, actual = (prediction == c) & labelled, truth == c
        tp[c] += int((predicted & actual).sum())
        fp[c] += int((predicted & ~actual).sum())
        fn[c] += int((~predicted & actual).sum())
present = [c for c in range(num_classes) if tp[c] + fp[c] + fn[c]]
print(sum(tp[c] / (tp[c] + fp[c] + fn[c]) for c in present) / len(present))
"""


def process_arm(command: list[str], pairs: int) -> Callable[[], float]:
    """One fresh process per run; its stdout's last line is kept for the cross-check."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}

    def run() -> float:
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
        return float(pairs)

    return run


def decode_pairs(pred_dir: Path, true_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(prediction, truth)`` uint8 arrays with PIL, paired by file name."""
    pairs = []
    for true_path in sorted(true_dir.iterdir()):
        with Image.open(pred_dir / true_path.name) as pred, Image.open(true_path) as true:
            pairs.append((np.asarray(pred), np.asarray(true)))
    return pairs


# ------------------------------------------------------------- the per-class loop
@dataclass
class ClassCounts:
    """Per-class true positives, false positives and false negatives over labelled pixels."""

    tp: list[int]
    fp: list[int]
    fn: list[int]
    labelled: int = 0

    def metrics(self) -> dict[str, Any]:
        """IoU and Dice per class, pixel accuracy, and the means over classes present in truth or prediction."""
        present = [c for c in range(len(self.tp)) if self.tp[c] + self.fp[c] + self.fn[c] > 0]
        iou = [
            self.tp[c] / (self.tp[c] + self.fp[c] + self.fn[c]) if c in present else math.nan
            for c in range(len(self.tp))
        ]
        dice = [
            2 * self.tp[c] / (2 * self.tp[c] + self.fp[c] + self.fn[c]) if c in present else math.nan
            for c in range(len(self.tp))
        ]
        return {
            "iou": iou,
            "dice": dice,
            "pixel_accuracy": sum(self.tp) / self.labelled,
            "mIoU": sum(iou[c] for c in present) / len(present),
            "mDice": sum(dice[c] for c in present) / len(present),
        }


def per_class_loop(pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int) -> ClassCounts:
    """Per image, per class: boolean masks and sums (the usual hand-written evaluation)."""
    counts = ClassCounts([0] * num_classes, [0] * num_classes, [0] * num_classes)
    for prediction, truth in pairs:
        labelled = truth != IGNORE
        counts.labelled += int(labelled.sum())
        for c in range(num_classes):
            predicted, actual = (prediction == c) & labelled, truth == c
            counts.tp[c] += int((predicted & actual).sum())
            counts.fp[c] += int((predicted & ~actual).sum())
            counts.fn[c] += int((~predicted & actual).sum())
    return counts


def files(pred_dir: Path, true_dir: Path) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Decode pair after pair, as the hand-written loop does."""
    for true_path in sorted(true_dir.iterdir()):
        with Image.open(pred_dir / true_path.name) as pred, Image.open(true_path) as true:
            yield np.asarray(pred), np.asarray(true)


def segkit_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The same numbers out of segkit's metrics dict."""
    per_class = list(metrics["per_class"].values())
    return {
        "iou": [entry["iou"] for entry in per_class],
        "dice": [entry["dice"] for entry in per_class],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "mIoU": metrics["mIoU"],
        "mDice": metrics["mDice"],
    }


def check_same(first: dict[str, Any], second: dict[str, Any], what: str) -> None:
    """Raise when two metric sets differ (beyond the last bits of a float64 mean)."""
    for key, value in first.items():
        values = value if isinstance(value, list) else [value]
        others = second[key] if isinstance(value, list) else [second[key]]
        for a, b in zip(values, others, strict=True):
            if not (math.isclose(a, b, rel_tol=1e-12) or (math.isnan(a) and math.isnan(b))):
                raise AssertionError(f"{what}: {key} differs: {value} vs {second[key]}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    repeats = resolve_repeats(args, quick_repeats=2)
    from segkit.data.classes import read_class_list
    from segkit.evaluation.confusion import ConfusionMatrix
    from segkit.evaluation.folders import evaluate_folders

    dubai = dataset_dir(data_root(args.data), DUBAI)
    class_file = dubai / "classes.json"
    num_classes = len(read_class_list(class_file).names)
    with tempfile.TemporaryDirectory(prefix="segkit-eval-throughput-") as folder:
        pred_dir, true_dir = build_folders(dubai / "masks", args.masks, num_classes, Path(folder))
        pairs = decode_pairs(pred_dir, true_dir)
        megapixels = sum(truth.size for _, truth in pairs) / 1e6
        results: dict[str, dict[str, Any]] = {}

        def arm(name: str, compute: Callable[[], dict[str, Any]]) -> Callable[[], float]:
            def run() -> float:
                results[name] = compute()
                return megapixels

            return run

        def confusion_in_memory() -> dict[str, Any]:
            matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE)
            for prediction, truth in pairs:
                matrix.update(prediction, truth)
            return segkit_metrics(matrix.compute())

        arms = {
            "segkit_files": arm(
                "segkit_files", lambda: segkit_metrics(evaluate_folders(pred_dir, true_dir, class_names=class_file))
            ),
            "loop_files": arm("loop_files", lambda: per_class_loop(files(pred_dir, true_dir), num_classes).metrics()),
            "segkit_memory": arm("segkit_memory", confusion_in_memory),
            "loop_memory": arm("loop_memory", lambda: per_class_loop(pairs, num_classes).metrics()),
        }
        log(f"{len(pairs)} mask pairs, {megapixels:.1f} megapixels; measuring {repeats} repeats")
        rates = measure_interleaved(arms, repeats)
        crop_pred, crop_true = build_crops(dubai / "masks", args.pairs, num_classes, Path(folder))
        loop_file = Path(folder) / "per_class_loop.py"
        loop_file.write_text(LOOP_SCRIPT)
        process_arms = {
            "segkit_process": process_arm(
                [
                    str(args.light_python),
                    "-m",
                    "segkit",
                    "evaluate",
                    "--pred",
                    str(crop_pred),
                    "--true",
                    str(crop_true),
                    "--classes",
                    str(class_file),
                ],
                args.pairs,
            ),
            "loop_process": process_arm(
                [sys.executable, str(loop_file), str(crop_pred), str(crop_true), str(num_classes)], args.pairs
            ),
        }
        log(f"whole processes over {args.pairs} pairs of {CROP}x{CROP}; measuring {repeats} repeats")
        process_rates = measure_interleaved(process_arms, repeats)
    for name in ("segkit_files", "segkit_memory", "loop_files"):
        check_same(results[name], results["loop_memory"], name)

    med = {name: median(values) for name, values in rates.items()}
    process_med = {name: median(values) for name, values in process_rates.items()}
    targets = [
        Target(
            "in memory: ConfusionMatrix / per-class loop (MP/s)",
            ratio(med["segkit_memory"], med["loop_memory"]),
            TARGET_IN_MEMORY,
        ),
        Target(
            "end to end: segkit evaluate / per-class loop (MP/s)",
            ratio(med["segkit_files"], med["loop_files"]),
            TARGET_END_TO_END,
        ),
        Target(
            f"processes, start-up included: segkit evaluate --pred --true / per-class loop script, "
            f"{args.pairs} pairs {CROP}x{CROP} (pairs/s)",
            ratio(process_med["segkit_process"], process_med["loop_process"]),
            TARGET_PROCESSES,
        ),
        Target("segkit evaluate speed", med["segkit_files"], unit="MP/s"),
        Target("ConfusionMatrix speed", med["segkit_memory"], unit="MP/s"),
    ]
    settings = (
        f"Dubai aerial masks, {len(pairs)} pairs, {megapixels:.1f} MP, {num_classes} classes + ignore, "
        f"{repeats} repeats"
    )
    report = {
        "benchmark": "eval_throughput",
        "megapixels_per_second": {name: rate_summary(values) for name, values in rates.items()},
        "processes": {
            "pairs_per_second": {name: rate_summary(values) for name, values in process_rates.items()},
            "pairs": args.pairs,
            "light_python": str(args.light_python),
        },
        "pairs": len(pairs),
        "megapixels": round(megapixels, 2),
        "same_numbers": True,
        "mIoU": results["loop_memory"]["mIoU"],
    }
    finish(report, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
