"""Time to accuracy: wall time until the validation mIoU reaches a target, three ways, same data.

ISBI 2012 ``train`` split by sorted name (``split_by_name``, 0.2: 24 training and 6
validation images). Arms, each stopped at the target or at ``--max-minutes``:

- ``segkit``: ``segkit train`` with its defaults (the real :class:`Trainer`, ``--time-budget``
  set to the cap); segkit's own per-epoch validation, checkpoints and plots count;
- ``naive``: the naive script (per-step PIL decode + letterbox, batch 1, float32 NCHW,
  64-channel U-Net, Adam 1e-3, BCE), one pass over the shuffled training images per epoch;
- ``smp``: ``segmentation_models_pytorch.Unet("resnet18", encoder_weights=None)`` in a plain
  loop: images decoded and letterboxed once, batch 8, AdamW 1e-3, BCE, float32 NCHW.

After every epoch of every arm the same function (:func:`validation_miou`) computes the
mIoU at the original 512 x 512 resolution (letterbox, forward, bilinear undo of the
resize, threshold, one confusion matrix over the validation images); its time is not
charged to any arm. segkit is evaluated through a subclass of its Trainer whose
``_save_epoch`` (called once per epoch, after the checkpoint is written) runs it.

    python benchmarks/time_to_accuracy.py                      # full run: 3 arms x 7.5 min + set-up, about 25 min
    python benchmarks/time_to_accuracy.py --quick --no-report
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import (  # noqa: E402
    ISBI,
    VAL_FRACTION,
    Stopwatch,
    add_common_arguments,
    data_root,
    dataset_dir,
    finish,
    isbi_split,
    log,
    naive_image_tensor,
    naive_loss,
    naive_mask_tensor,
    naive_train_step,
    resolve_repeats,
    setup_logging,
)

SECTION = "Time to accuracy (benchmarks/time_to_accuracy.py)"
TARGET_VS_NAIVE = 0.25
TARGET_VS_SMP = 1.0
NAIVE_BASE_CHANNELS = 64
PLAIN_BATCH = 8
PLAIN_LR = 1e-3

Evaluate = Callable[[nn.Module], float]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repeats=1)
    parser.add_argument("--target", type=float, default=0.80, help="validation mIoU to reach (default 0.80)")
    parser.add_argument("--max-minutes", type=float, default=7.5, help="time cap of each arm (default 7.5)")
    parser.add_argument(
        "--img-size", type=int, default=256, help="network input side of every arm (default 256, segkit's)"
    )
    parser.add_argument("--arms", default="segkit,naive,smp", help="comma-separated arms to run (default all three)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    parser.add_argument(
        "--segkit-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig option for the segkit arm instead of its default, e.g. precision=bf16 (repeatable)",
    )
    args = parser.parse_args(argv)
    args.segkit_options = dict(_option(parser, text) for text in args.segkit_option)
    if args.quick:
        args.max_minutes = min(args.max_minutes, 0.4)
        args.img_size = min(args.img_size, 64)
    args.arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown or not args.arms:
        parser.error(f"--arms takes some of {', '.join(ARMS)}; unknown: {', '.join(unknown)}")
    return args


def _option(parser: argparse.ArgumentParser, text: str) -> tuple[str, Any]:
    """``"precision=bf16"`` -> ``("precision", "bf16")``; values are read as YAML (numbers, lists, booleans)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        parser.error(f"--segkit-option takes KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), yaml.safe_load(value)


# ------------------------------------------------------------- shared evaluation
@dataclass(frozen=True)
class ValidationSet:
    """The validation images at their original size with class-index masks (decoded once by segkit)."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    num_classes: int


def load_validation(folder: Path) -> ValidationSet:
    from segkit.data.sources import open_source
    from segkit.data.sources import split_by_name

    source = open_source(folder)
    _, val_indices = split_by_name([sample.name for sample in source.samples], VAL_FRACTION)
    samples = [source.load(index) for index in val_indices]
    return ValidationSet([s.image for s in samples], [s.mask for s in samples], source.num_classes)


@torch.inference_mode()
def validation_miou(model: nn.Module, data: ValidationSet, img_size: int, device: torch.device) -> float:
    """mIoU at the original resolution: letterbox, forward, bilinear undo, threshold/argmax, one confusion matrix.

    The same function for every arm; one logit channel means sigmoid > 0.5 (logit > 0).
    """
    from segkit.data.transforms import PreprocessConfig, normalize, resize_image, undo_resize
    from segkit.evaluation.confusion import ConfusionMatrix

    preprocess = PreprocessConfig(img_size=(img_size, img_size), resize="letterbox")
    matrix = ConfusionMatrix(data.num_classes, ignore_index=255)
    was_training = model.training
    model.eval()
    try:
        for image, mask in zip(data.images, data.masks):
            resized, geometry = resize_image(image, preprocess)
            batch = torch.from_numpy(resized).permute(2, 0, 1)[None].to(device)
            logits = model(normalize(batch, preprocess.mean, preprocess.std)).float()
            scores = undo_resize(logits[0], geometry)
            prediction = scores[0] > 0 if scores.shape[0] == 1 else scores.argmax(0)
            matrix.update(prediction.cpu(), torch.from_numpy(mask))
    finally:
        model.train(was_training)
    return float(matrix.compute()["mIoU"])


# ------------------------------------------------------------------------- arms
@dataclass
class ArmResult:
    """What one arm did: reached the target or not, its charged seconds, and the mIoU after each epoch."""

    name: str
    reached: bool = False
    seconds: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, epoch: int, seconds: float, miou: float, target: float) -> bool:
        self.curve.append({"epoch": epoch, "seconds": round(seconds, 2), "mIoU": round(miou, 4)})
        self.seconds = seconds
        self.reached = miou >= target
        log(f"  {self.name} epoch {epoch}: mIoU {miou:.4f} after {seconds:.1f} s")
        return self.reached

    def at_level(self, level: float) -> ArmResult:
        """This run judged against another target: the first evaluation at or above ``level``."""
        for point in self.curve:
            if point["mIoU"] >= level:
                return ArmResult(self.name, True, point["seconds"], self.curve, self.extra)
        return ArmResult(self.name, False, self.seconds, self.curve, self.extra)

    @property
    def best_miou(self) -> float:
        return max((point["mIoU"] for point in self.curve), default=float("nan"))


@dataclass(frozen=True)
class ArmContext:
    """Everything an arm needs."""

    train_pairs: list[tuple[Path, Path]]
    folder: Path
    evaluate: Evaluate
    target: float
    cap_seconds: float
    img_size: int
    device: torch.device
    workdir: Path
    segkit_options: dict[str, Any] = field(default_factory=dict)


class _TargetReached(Exception):
    """Ends segkit's training loop when the shared evaluation reached the target."""


def run_segkit(context: ArmContext) -> ArmResult:
    """segkit's defaults through the real Trainer, evaluated by the shared function after every epoch."""
    from segkit.training.config import TrainConfig
    from segkit.training.trainer import Trainer, unwrap

    result = ArmResult("segkit")
    clock = Stopwatch()

    class EvaluatingTrainer(Trainer):
        def _save_epoch(self, epoch: int, improved: bool, samples: Any) -> None:
            super()._save_epoch(epoch, improved, samples)
            clock.pause()
            started = time.monotonic()
            miou = context.evaluate(unwrap(self.model))
            # The trainer's own clock (time budget, LR schedule) must not pay for it either.
            self.elapsed_before -= time.monotonic() - started
            clock.resume()
            if result.record(epoch, clock.seconds, miou, context.target):
                raise _TargetReached

    config = TrainConfig.from_dict(
        {
            "data": str(context.folder),
            "out": tempfile.mkdtemp(prefix="segkit-", dir=context.workdir),
            "time_budget": context.cap_seconds,
            "img_size": context.img_size,
            "device": str(context.device),
            "overwrite": True,
            **context.segkit_options,
        }
    )
    try:
        trained = EvaluatingTrainer(config, progress=False).fit()
        result.extra["stopped_because"] = trained.stopped_because
    except _TargetReached:
        result.extra["stopped_because"] = "reached the target"
    return result


def _epochs(clock: Stopwatch, cap_seconds: float) -> Iterator[int]:
    epoch = 0
    while clock.seconds < cap_seconds:
        epoch += 1
        yield epoch


def run_naive(context: ArmContext) -> ArmResult:
    """The naive script: per-step decode, batch 1, 64-channel U-Net, Adam."""
    from segkit.models import create_model

    result = ArmResult("naive")
    clock = Stopwatch()
    torch.manual_seed(0)
    order = random.Random(0)
    model = create_model("unet", num_classes=1, base_channels=NAIVE_BASE_CHANNELS).to(context.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=PLAIN_LR)
    for epoch in _epochs(clock, context.cap_seconds):
        pairs = list(context.train_pairs)
        order.shuffle(pairs)
        for pair in pairs:
            naive_train_step(model, optimizer, pair, context.img_size, context.device)
            if clock.seconds >= context.cap_seconds:
                break
        if _evaluate_off_the_clock(context, model, clock, result, epoch):
            break
    return result


def _evaluate_off_the_clock(context: ArmContext, model: torch.nn.Module, clock: Stopwatch, result: ArmResult, epoch: int) -> bool:
    """Evaluate with the shared code, not counting its time; True once the target is reached."""
    clock.pause()
    miou = context.evaluate(model)
    clock.resume()
    return result.record(epoch, clock.seconds, miou, context.target)


def run_smp(context: ArmContext) -> ArmResult:
    """smp's U-Net (ResNet-18 encoder, random init) in a plain AdamW loop over pre-decoded tensors."""
    import segmentation_models_pytorch as smp

    result = ArmResult("smp")
    clock = Stopwatch()
    torch.manual_seed(0)
    images = torch.cat([naive_image_tensor(image, context.img_size)[0] for image, _ in context.train_pairs])
    masks = torch.cat([naive_mask_tensor(mask, context.img_size, binary=True) for _, mask in context.train_pairs])
    images, masks = images.to(context.device), masks.to(context.device)
    model = smp.Unet("resnet18", encoder_weights=None, classes=1).to(context.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=PLAIN_LR)
    for epoch in _epochs(clock, context.cap_seconds):
        permutation = torch.randperm(len(images))
        for start in range(0, len(images) - PLAIN_BATCH + 1, PLAIN_BATCH):
            batch = permutation[start : start + PLAIN_BATCH]
            loss = naive_loss(model(images[batch]), masks[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if clock.seconds >= context.cap_seconds:
                break
        if _evaluate_off_the_clock(context, model, clock, result, epoch):
            break
    return result


ARMS: dict[str, Callable[[ArmContext], ArmResult]] = {"segkit": run_segkit, "naive": run_naive, "smp": run_smp}


# ---------------------------------------------------------------------- ratios
def time_ratio(first: ArmResult, second: ArmResult, target: float) -> tuple[float | None, str]:
    """``first.seconds / second.seconds`` where both reached; a bound only when it decides the target.

    An arm that did not reach the target needed more than its charged seconds, so
    the ratio is an upper bound when only ``second`` failed and a lower bound when
    only ``first`` failed; an undecidable bound is reported as ``None``.
    """
    value = first.seconds / second.seconds if second.seconds > 0 else None
    if value is None:
        return None, "no time measured"
    if first.reached and second.reached:
        return value, ""
    if first.reached:
        decided = value <= target
        return (
            value if decided else None
        ), f"{'upper bound' if decided else 'undecided'}: {second.name} never reached it"
    if second.reached:
        decided = value > target
        return (
            value if decided else None
        ), f"{'lower bound' if decided else 'undecided'}: {first.name} never reached it"
    return None, "neither reached the target"


def level_figures(results: dict[str, ArmResult], level: float, proxy: str = "") -> list[Target]:
    """Each arm's time to ``level`` and segkit's time ratios to the other arms, against the targets."""
    at_level = {name: result.at_level(level) for name, result in results.items()}
    targets = [
        Target(f"{name} time to mIoU {level:g}", result.seconds, unit="s", note="" if result.reached else "not reached")
        for name, result in at_level.items()
    ]
    for other, goal in (("naive", TARGET_VS_NAIVE), ("smp", TARGET_VS_SMP)):
        if "segkit" in at_level and other in at_level:
            value, note = time_ratio(at_level["segkit"], at_level[other], goal)
            note = "; ".join(part for part in (note, proxy.strip(" ()")) if part)
            targets.append(Target(f"segkit / {other} time to mIoU {level:g}", value, goal, at_least=False, note=note))
    return targets


def median_result(results: list[ArmResult]) -> ArmResult:
    """The repeat with the median time (repeats that did not reach the target sort last)."""
    ordered = sorted(results, key=lambda result: (not result.reached, result.seconds))
    return ordered[(len(ordered) - 1) // 2]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    repeats = resolve_repeats(args, quick_repeats=1)
    from segkit.device import resolve_device

    root = data_root(args.data)
    folder = dataset_dir(root, ISBI)
    device = resolve_device(args.device)
    validation = load_validation(folder)
    train_pairs, _ = isbi_split(root)
    outcomes: dict[str, list[ArmResult]] = {name: [] for name in args.arms}
    with tempfile.TemporaryDirectory(prefix="segkit-time-to-accuracy-") as workdir:
        context = ArmContext(
            train_pairs=train_pairs,
            folder=folder,
            target=args.target,
            cap_seconds=args.max_minutes * 60,
            img_size=args.img_size,
            device=device,
            workdir=Path(workdir),
            segkit_options=args.segkit_options,
            evaluate=lambda model: validation_miou(model, validation, args.img_size, device),
        )
        for repeat in range(repeats):
            for name in args.arms:
                log(f"repeat {repeat + 1}/{repeats}: {name} (cap {args.max_minutes:g} min, target mIoU {args.target})")
                outcomes[name].append(ARMS[name](context))
    chosen = {name: median_result(results) for name, results in outcomes.items()}
    targets = level_figures(chosen, args.target)
    best = [result.best_miou for result in chosen.values()]
    if len(chosen) > 1 and not all(result.reached for result in chosen.values()) and min(best) > 0:
        common = math.floor(min(best) * 1000) / 1000
        targets += level_figures(chosen, common, f" (proxy: the best mIoU every arm reached; {args.target} was not)")
    changed = "".join(f", segkit {key}={value}" for key, value in args.segkit_options.items())
    settings = (
        f"ISBI 2012 train split 24/6, {args.img_size}x{args.img_size}, target mIoU {args.target} at 512x512, "
        f"cap {args.max_minutes:g} min per arm, {device.type}, {repeats} repeat(s){changed}"
    )
    report = {
        "benchmark": "time_to_accuracy",
        "target_miou": args.target,
        "cap_seconds": args.max_minutes * 60,
        "arms": {
            name: {
                "reached": result.reached,
                "seconds": round(result.seconds, 2),
                "best_mIoU": result.best_miou,
                "curve": result.curve,
                **result.extra,
                "all_repeats_seconds": [round(r.seconds, 2) for r in outcomes[name]],
            }
            for name, result in chosen.items()
        },
    }
    finish(report, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
