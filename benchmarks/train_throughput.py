"""Training throughput: segkit's training pipeline against a bare loop and a naive script.

Images per second of training steps on ISBI 2012 (train split), measured side by
side in one run, the arms taking turns, as medians of ``--repeats``:

- ``bare``: ``Learner.train_step`` of the same recipe (model, loss, optimiser, memory
  format, precision) over batches already decoded, resized and augmented, on the device
  (the cost of the step alone, without the loader);
- ``segkit``: ``Trainer.train_epoch`` of a real :class:`segkit.training.trainer.Trainer`,
  the code path of ``segkit train`` (cached decoded samples, albumentations
  augmentation, DataLoader collation, normalisation on the device, step, LR schedule);
- ``naive``: per-step PIL decode + letterbox, float32 contiguous NCHW, batch 1, no
  workers, with the 64-channel U-Net users run (``naive_unet64``) and with segkit's
  U-Net (``naive_same``), so that "same U-Net, same size" is a fair ratio.

Achieved FLOP/s counts one forward+backward with ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matrix products) and compares it with the best speed of a large
``torch.mm`` measured in the same run.

    python benchmarks/train_throughput.py                  # full run (3-5 min on 2 cores)
    python benchmarks/train_throughput.py --quick --no-report
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import (  # noqa: E402
    ISBI,
    add_common_arguments,
    data_root,
    dataset_dir,
    finish,
    isbi_split,
    log,
    matmul_peak,
    measure_interleaved,
    median,
    naive_train_step,
    rate_summary,
    ratio,
    resolve_repeats,
    setup_logging,
    synchronize,
)

SECTION = "Training throughput (benchmarks/train_throughput.py)"
TARGET_VS_BARE = 0.9
TARGET_VS_NAIVE = 1.5
TARGET_PEAK_FRACTION = 0.5
PEAK_DTYPES = {"32": torch.float32, "bf16": torch.bfloat16, "16-mixed": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--img-size", type=int, default=256, help="network input side (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch of the bare loop and segkit (default 8)")
    parser.add_argument("--base-channels", type=int, default=16, help="segkit U-Net width (default 16, segkit's)")
    parser.add_argument(
        "--naive-base-channels", type=int, default=64, help="width of the naive script's U-Net (default 64)"
    )
    parser.add_argument(
        "--precision", default=None, choices=sorted(PEAK_DTYPES), help="segkit/bare precision (default segkit's)"
    )
    parser.add_argument(
        "--contiguous", action="store_true", help="segkit/bare in NCHW instead of segkit's default channels_last"
    )
    parser.add_argument("--num-workers", type=int, default=None, help="segkit DataLoader workers (default segkit's)")
    parser.add_argument("--naive-images", type=int, default=None, help="naive steps per repeat (default 6, quick 2)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    args = parser.parse_args(argv)
    if args.quick:
        args.img_size, args.batch_size = min(args.img_size, 64), min(args.batch_size, 4)
    if args.naive_images is None:
        args.naive_images = 2 if args.quick else 6
    return args


def build_trainer(args: argparse.Namespace, out: Path):
    """A real segkit Trainer on ISBI with segkit's defaults, except size, batch and the options given."""
    from segkit.config import TrainConfig
    from segkit.data.transforms import PreprocessConfig
    from segkit.training.trainer import Trainer

    defaults = TrainConfig()
    config = TrainConfig(
        data=str(dataset_dir(data_root(args.data), ISBI)),
        out=str(out),
        preprocess=PreprocessConfig(img_size=args.img_size),
        batch_size=args.batch_size,
        precision=args.precision or defaults.precision,
        channels_last=not args.contiguous and defaults.channels_last,
        num_workers=defaults.num_workers if args.num_workers is None else args.num_workers,
        model_kwargs={"base_channels": args.base_channels},
        device=args.device,
        ema=False,
    )
    return Trainer(config, progress=False)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision as segkit's trainer applies it (``None``: float32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def bare_arm(trainer: Any):
    """A step function over pre-loaded batches: a second Learner of the same recipe (its own model and optimiser),
    stepping with :meth:`Learner.train_step` over one epoch of batches decoded and augmented beforehand."""
    from segkit.training.learner import Learner

    learner = Learner(trainer.config, trainer.data, trainer.device, progress=False)
    batches = [
        (images.to(trainer.device), masks.to(trainer.device))
        for images, masks in itertools.islice(learner.start_epoch(1), len(learner.train_loader))
    ]
    lr = trainer.config.lr

    def run() -> float:
        for images, masks in batches:
            learner.train_step(images, masks, lr)
        synchronize(trainer.device)
        return float(sum(len(images) for images, _ in batches))

    return run, learner


def segkit_arm(trainer: Any):
    """One epoch of the real trainer loop per call."""
    epochs = itertools.count(1)

    def run() -> float:
        seen = trainer.train_epoch(next(epochs)).images
        synchronize(trainer.device)
        return float(seen)

    return run


def naive_arm(trainer: Any, base_channels: int, pairs: list, images: int, img_size: int):
    """``images`` naive steps per call, cycling through the training pairs (decoded from disk every time)."""
    from segkit.models import create_model

    device = trainer.device
    outputs = 1 if trainer.learner.binary else len(trainer.classes)
    model = create_model("unet", num_classes=outputs, base_channels=base_channels).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    cycle = itertools.cycle(pairs)

    def run() -> float:
        for _ in range(images):
            naive_train_step(model, optimizer, next(cycle), img_size, device)
        synchronize(device)
        return float(images)

    return run, model


def training_flops(
    model: torch.nn.Module, img_size: int, device: torch.device, channels_last: bool, autocast_dtype: torch.dtype | None
) -> int:
    """FLOPs of one forward+backward of one image (FlopCounterMode: convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    counted = copy.deepcopy(model).train()
    image = torch.randn(1, 3, img_size, img_size, device=device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        with autocast(device, autocast_dtype):
            output = counted(image)
        output.float().sum().backward()
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    repeats = resolve_repeats(args)
    train_pairs, _ = isbi_split(data_root(args.data))
    with tempfile.TemporaryDirectory(prefix="segkit-train-throughput-") as folder:
        log("building segkit's trainer (decodes and caches the dataset)")
        start = time.perf_counter()
        trainer = build_trainer(args, Path(folder) / "run")
        setup_seconds = time.perf_counter() - start
        config = trainer.config
        bare, bare_learner = bare_arm(trainer)
        naive_big, naive_big_model = naive_arm(
            trainer, args.naive_base_channels, train_pairs, args.naive_images, args.img_size
        )
        naive_same, _ = naive_arm(trainer, args.base_channels, train_pairs, args.naive_images, args.img_size)
        arms = {"bare": bare, "segkit": segkit_arm(trainer), "naive_same": naive_same, "naive_unet64": naive_big}
        log("warm-up (one call per arm)")
        for arm in arms.values():
            arm()
        log(f"measuring {repeats} repeats")
        rates = measure_interleaved(arms, repeats)

    flops_segkit = training_flops(
        bare_learner.model, args.img_size, trainer.device, config.channels_last, bare_learner.autocast_dtype
    )
    flops_naive = training_flops(naive_big_model, args.img_size, trainer.device, False, None)
    mm_size = 1024 if args.quick else 4096
    peak_dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if config.precision == "16-mixed":
        peak_dtypes["fp16"] = torch.float16
    peaks = {name: matmul_peak(dtype, mm_size, max(repeats, 3), trainer.device) for name, dtype in peak_dtypes.items()}
    peak_name = {"32": "fp32", "bf16": "bf16", "16-mixed": "fp16"}[config.precision]

    med = {name: median(values) for name, values in rates.items()}
    achieved = {
        "bare": med["bare"] * flops_segkit,
        "segkit": med["segkit"] * flops_segkit,
        "naive_same": med["naive_same"] * flops_segkit,
        "naive_unet64": med["naive_unet64"] * flops_naive,
    }
    segkit_peak_fraction = ratio(achieved["segkit"], peaks[peak_name])
    targets = [
        Target("segkit / bare loop (images/s)", ratio(med["segkit"], med["bare"]), TARGET_VS_BARE),
        Target("segkit / naive, same U-Net (images/s)", ratio(med["segkit"], med["naive_same"]), TARGET_VS_NAIVE),
        Target("segkit / naive 64-channel U-Net (images/s)", ratio(med["segkit"], med["naive_unet64"])),
        Target(f"segkit training FLOP/s / {peak_name} matmul peak", segkit_peak_fraction, TARGET_PEAK_FRACTION),
        Target(f"bare-loop training FLOP/s / {peak_name} matmul peak", ratio(achieved["bare"], peaks[peak_name])),
        Target("segkit training speed", med["segkit"], unit="images/s"),
        Target(f"{peak_name} matmul peak", peaks[peak_name] / 1e9, unit="GFLOP/s"),
    ]
    settings = (
        f"{config.model} base {args.base_channels} (naive {args.naive_base_channels}), "
        f"{args.img_size}x{args.img_size}, batch {config.batch_size} (naive 1), precision {config.precision}, "
        f"{'channels_last' if config.channels_last else 'NCHW'}, workers {config.num_workers}, "
        f"{trainer.device.type}, {repeats} repeats"
    )
    report = {
        "benchmark": "train_throughput",
        "images_per_second": {name: rate_summary(values) for name, values in rates.items()},
        "flops_per_image": {"segkit_unet": flops_segkit, "naive_unet64": flops_naive},
        "achieved_gflops": {name: round(value / 1e9, 2) for name, value in achieved.items()},
        "matmul_peak_gflops": {name: round(value / 1e9, 2) for name, value in peaks.items()},
        "matmul_size": mm_size,
        "segkit_setup_seconds": round(setup_seconds, 2),
        "train_images": len(trainer.learner.train_set),
        "binary": trainer.learner.binary,
    }
    finish(report, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
