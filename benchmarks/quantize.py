"""int8 against fp32 ONNX on the CPU: images/s and mIoU on ISBI 2012 and Dubai aerial validation images.

For each dataset, the validation images are every 5th image by sorted name; the
others are the training images. A U-Net is trained on those for
``--train-seconds`` (``segkit.train``), or ``--checkpoint-isbi``/``--checkpoint-dubai``
are used as given. It is exported to ONNX (fp32) and quantized to int8 with
``segkit.exporters.quantize.quantize_onnx`` (static, QDQ, per-channel int8 weights),
calibrated on the training images. Then, on the validation images:

- mIoU of both models at each image's original size (``evaluate_checkpoint``, the
  predictor that ``segkit predict`` uses);
- images/s of both models through ``Predictor.predict_batch`` (decoded images in
  memory, resize and undo included), taking turns, medians of ``--repeats``;
- images/s of the bare ONNX Runtime forward pass at the network input size.

Targets (issue 12): int8 >= 1.5x fp32 images/s; mIoU within 0.01.

    python benchmarks/quantize.py                 # full run (about 15 min on 2 cores, training included)
    python benchmarks/quantize.py --quick --no-report
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import (  # noqa: E402
    DUBAI,
    ISBI,
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

SECTION = "int8 quantization (benchmarks/quantize.py)"
TARGET_SPEEDUP = 1.5
TARGET_MIOU_DROP = 0.01
VAL_EVERY = 5  # every 5th image by sorted name is a validation image
DATASETS = {"isbi": ISBI, "dubai": DUBAI}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repeats=5)
    parser.add_argument("--checkpoint-isbi", type=Path, help="trained ISBI checkpoint (default: train one)")
    parser.add_argument("--checkpoint-dubai", type=Path, help="trained Dubai checkpoint (default: train one)")
    parser.add_argument(
        "--train-seconds", type=float, default=None, help="training time per dataset (default 300, quick 15)"
    )
    parser.add_argument("--img-size", type=int, default=None, help="network input side (default 256, quick 64)")
    parser.add_argument("--calibration-images", type=int, default=64, help="calibration images (default 64)")
    args = parser.parse_args(argv)
    if args.train_seconds is None:
        args.train_seconds = 15.0 if args.quick else 300.0
    if args.img_size is None:
        args.img_size = 64 if args.quick else 256
    return args


def split_folder(source: Path, work: Path, quick: bool) -> tuple[Path, Path]:
    """``work/train`` and ``work/val`` (symbolic links to ``source``'s images/ and masks/, class files copied).

    Validation: every ``VAL_EVERY``-th image by sorted name; quick runs keep a few of each.
    """
    images = sorted(path for path in (source / "images").iterdir() if not path.name.startswith("."))
    masks = {path.stem: path for path in (source / "masks").iterdir()}
    parts: dict[str, list[Path]] = {"train": [], "val": []}
    for index, image in enumerate(images):
        parts["val" if index % VAL_EVERY == VAL_EVERY - 1 else "train"].append(image)
    if quick:
        parts = {"train": parts["train"][:8], "val": parts["val"][:3]}
    for part, members in parts.items():
        for folder in ("images", "masks"):
            (work / part / folder).mkdir(parents=True)
        for image in members:
            (work / part / "images" / image.name).symlink_to(image)
            mask = masks[image.stem]
            (work / part / "masks" / mask.name).symlink_to(mask)
        for name in ("classes.json", "class_names.txt"):
            if (source / name).exists():
                shutil.copy(source / name, work / part / name)
    return work / "train", work / "val"


def trained_checkpoint(train: Path, out: Path, seconds: float, img_size: int) -> Path:
    import segkit

    result = segkit.train(
        data=str(train), val_split=0.2, time_budget=f"{seconds}s", img_size=img_size, out=str(out), device="cpu"
    )
    return Path(result.best_checkpoint)


def measure_dataset(
    name: str, checkpoint: Path | None, args: argparse.Namespace, work: Path, repeats: int
) -> dict[str, Any]:
    from segkit.data.sources import open_source
    from segkit.evaluation.evaluate import evaluate_checkpoint
    from segkit.exporters.onnx import export_onnx
    from segkit.exporters.quantize import quantize_onnx
    from segkit.prediction.onnx_backend import OnnxBackend
    from segkit.prediction.predictor import Predictor

    source = dataset_dir(data_root(args.data), DATASETS[name])
    train, val = split_folder(source, work / name, args.quick)
    if checkpoint is None:
        log(f"{name}: training for {args.train_seconds:.0f} s")
        checkpoint = trained_checkpoint(train, work / name / "run", args.train_seconds, args.img_size)
    fp32 = export_onnx(checkpoint, work / name / "fp32.onnx").path
    quantized = quantize_onnx(
        fp32, work / name / "int8.onnx", train, calibration_images=args.calibration_images, max_drop=1.0
    )
    scores = {
        label: evaluate_checkpoint(path, val)["mIoU"] for label, path in (("fp32", fp32), ("int8", quantized.path))
    }
    images = [sample.image for sample in (open_source(val).load(i) for i in range(len(open_source(val))))]
    predictors = {label: Predictor.from_checkpoint(path) for label, path in (("fp32", fp32), ("int8", quantized.path))}
    backends = {label: OnnxBackend(path, "cpu") for label, path in (("fp32", fp32), ("int8", quantized.path))}
    height, width = predictors["fp32"].preprocess.img_size
    inputs = np.random.default_rng(0).standard_normal((4, 3, height, width)).astype(np.float32)

    def predict(label: str):
        return lambda: float(len(predictors[label].predict_batch(images)))

    def forward(label: str):
        return lambda: (backends[label].forward(inputs), float(len(inputs)))[1]

    arms = {f"predict_{label}": predict(label) for label in predictors}
    arms.update({f"forward_{label}": forward(label) for label in backends})
    for arm in arms.values():
        arm()
    log(f"{name}: {len(images)} validation images, measuring {repeats} repeats")
    rates = measure_interleaved(arms, repeats)
    return {
        "checkpoint": str(checkpoint),
        "validation_images": len(images),
        "mIoU": scores,
        "calibration": quantized.to_dict(),
        "size_bytes": {"fp32": fp32.stat().st_size, "int8": quantized.size_bytes},
        "rates": rates,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    repeats = resolve_repeats(args)
    checkpoints = {"isbi": args.checkpoint_isbi, "dubai": args.checkpoint_dubai}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="segkit-quantize-bench-") as folder:
        for name in DATASETS:
            results[name] = measure_dataset(name, checkpoints[name], args, Path(folder), repeats)
    targets: list[Target] = []
    report: dict[str, Any] = {"benchmark": "quantize"}
    for name, result in results.items():
        med = {arm: median(values) for arm, values in result["rates"].items()}
        drop = result["mIoU"]["fp32"] - result["mIoU"]["int8"]
        targets += [
            Target(
                f"{name}: int8 / fp32 predict (images/s)",
                ratio(med["predict_int8"], med["predict_fp32"]),
                TARGET_SPEEDUP,
            ),
            Target(f"{name}: int8 / fp32 forward (images/s)", ratio(med["forward_int8"], med["forward_fp32"])),
            Target(f"{name}: fp32 - int8 validation mIoU", drop, TARGET_MIOU_DROP, at_least=False, unit=""),
        ]
        report[name] = {
            **{key: value for key, value in result.items() if key != "rates"},
            "images_per_second": {arm: rate_summary(values) for arm, values in result["rates"].items()},
        }
    settings = (
        f"U-Net, input {args.img_size}, {'given checkpoints' if any(checkpoints.values()) else f'trained {args.train_seconds:.0f} s'}, "
        f"val = every {VAL_EVERY}th image by name, CPU, {repeats} repeats"
    )
    finish(report, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
