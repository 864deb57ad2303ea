"""Tiled prediction: peak memory of a 4096 x 4096 image, and tiled vs whole-image agreement.

The checkpoint is the default U-Net (random weights with BatchNorm statistics
measured on real images, see :func:`common.calibrated_checkpoint`, unless
``--checkpoint``) with the ``crop`` resize policy, whose predictor tiles images
larger than its automatic window (4 training crops per side: 1024 x 1024 for 256
crops, one window per pass, overlap 0.25, Gaussian blending; see
:mod:`segkit.prediction.tiling`).

- Memory: a fresh subprocess loads the checkpoint and a ``--side`` x ``--side`` RGB
  image (an upscaled Dubai aerial tile) and predicts it; its peak resident set size
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is reported, together with that of
  an identical subprocess that stops before predicting (interpreter, torch, model, image).
- Agreement: a ``--whole-side`` crop of a Dubai image predicted whole at native
  resolution and tiled; the share of pixels with the same class.

    python benchmarks/tile_memory.py                  # full run (about 5 min on 2 cores)
    python benchmarks/tile_memory.py --quick --no-report
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import (  # noqa: E402
    DUBAI,
    add_common_arguments,
    calibrated_checkpoint,
    data_root,
    dataset_dir,
    finish,
    log,
    setup_logging,
)

SECTION = "Tiled prediction memory (benchmarks/tile_memory.py)"
TARGET_PEAK_GIB = 2.0
TARGET_AGREEMENT = 99.5  # percent of pixels
GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repeats=1)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="crop-policy checkpoint (default: random-weight U-Net, crop 256)",
    )
    parser.add_argument("--side", type=int, default=None, help="side of the large image (default 4096, quick 1024)")
    parser.add_argument(
        "--whole-side", type=int, default=None, help="side of the agreement image (default 2048, quick 1024)"
    )
    parser.add_argument(
        "--crop", type=int, default=None, help="crop size of the random checkpoint (default 256, quick 128)"
    )
    parser.add_argument("--device", default="cpu", help="device (default cpu)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: the image (.npy) to predict
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)  # internal: stop before predicting
    args = parser.parse_args(argv)
    if args.side is None:
        args.side = 1024 if args.quick else 4096
    if args.whole_side is None:
        args.whole_side = 1024 if args.quick else 2048
    if args.crop is None:
        args.crop = 128 if args.quick else 256
    return args


def tiled_predictor(checkpoint: Path, device: str) -> Any:
    """A Predictor tiling as ``segkit predict`` does by default (automatic windows, overlap 0.25)."""
    from segkit.prediction.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, device=device)


def child(args: argparse.Namespace) -> int:
    """Run inside the subprocess: predict (unless ``--baseline``) and print the peak RSS as JSON."""
    predictor = tiled_predictor(args.checkpoint, args.device)
    image = np.load(args.child)
    start = time.perf_counter()
    shape = None if args.baseline else predictor.predict(image).shape
    seconds = time.perf_counter() - start
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    print(json.dumps({"peak_rss_bytes": peak, "seconds": seconds, "mask_shape": shape}))
    return 0


def run_child(image_file: Path, checkpoint: Path, device: str, baseline: bool) -> dict[str, Any]:
    """Peak RSS and seconds of a fresh interpreter predicting ``image_file`` (or stopping before it)."""
    command = [sys.executable, __file__, "--child", str(image_file), "--checkpoint", str(checkpoint)]
    command += ["--device", device]
    done = subprocess.run(command + ["--baseline"] * baseline, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child process failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_dubai_image(root: Path) -> Image.Image:
    """The Dubai aerial image with the most pixels, as RGB."""
    areas = {}
    for path in sorted((dataset_dir(root, DUBAI) / "images").iterdir()):
        with Image.open(path) as opened:
            areas[path] = opened.width * opened.height
    with Image.open(max(areas, key=areas.__getitem__)) as opened:
        return opened.convert("RGB")


def agreement(checkpoint: Path, image: np.ndarray, args: argparse.Namespace) -> tuple[float, dict[str, Any]]:
    """Share of pixels where the tiled prediction (automatic windows) equals the whole-image prediction."""
    from segkit.prediction.tiling import TileConfig

    predictor = tiled_predictor(checkpoint, args.device)
    plan = tile_plan(predictor, *image.shape[:2])
    tiled = predictor.predict(image)
    predictor.tiling = TileConfig(auto=False)
    whole = predictor.predict(image)
    details = {"window": list(plan.window), "windows": len(plan.positions), "class_shares": class_shares(whole)}
    return float((tiled == whole).mean()), details


def tile_plan(predictor: Any, height: int, width: int) -> Any:
    """The windows the predictor uses for an image of this size (an error when it would not tile it)."""
    plan = predictor.tile_plan(height, width)
    if plan is None:
        raise SystemExit(f"this checkpoint does not tile a {width}x{height} image; use a larger --side/--whole-side")
    return plan


def class_shares(mask: np.ndarray) -> list[float]:
    """Share of pixels of each class (a mask of one class would make any agreement trivial)."""
    return [round(float(share), 4) for share in np.bincount(mask.ravel()) / mask.size]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child(args)
    setup_logging()
    source = largest_dubai_image(data_root(args.data))
    with tempfile.TemporaryDirectory(prefix="segkit-tile-memory-") as folder:
        work = Path(folder)
        checkpoint = args.checkpoint or calibrated_checkpoint(
            work / "random.pt", [np.asarray(source)], args.crop, "crop"
        )
        big = np.asarray(source.resize((args.side, args.side), Image.BILINEAR))
        np.save(work / "big.npy", big)
        log(f"predicting a {args.side}x{args.side} image in a subprocess")
        run = run_child(work / "big.npy", checkpoint, args.device, baseline=False)
        base = run_child(work / "big.npy", checkpoint, args.device, baseline=True)
        whole_image = np.ascontiguousarray(np.asarray(source)[: args.whole_side, : args.whole_side])
        log(f"agreement of tiled and whole predictions on a {args.whole_side}x{args.whole_side} crop")
        agree, agree_plan = agreement(checkpoint, whole_image, args)
        predictor = tiled_predictor(checkpoint, args.device)
    plan = tile_plan(predictor, args.side, args.side)
    targets = [
        Target(
            f"peak memory, {args.side}x{args.side} tiled, {plan.batch_size} window(s) per pass",
            run["peak_rss_bytes"] / GIB,
            TARGET_PEAK_GIB,
            at_least=False,
            unit="GiB",
        ),
        Target("tiled vs whole mask agreement", 100 * agree, TARGET_AGREEMENT, unit="%"),
        Target("memory before predicting (interpreter, torch, model, image)", base["peak_rss_bytes"] / GIB, unit="GiB"),
    ]
    settings = (
        f"{'random-weight unet' if args.checkpoint is None else args.checkpoint.name}, crop "
        f"{predictor.preprocess.img_size[0]}, windows {plan.window[0]}x{plan.window[1]} overlap "
        f"{predictor.tiling.overlap}, agreement on {args.whole_side}x{args.whole_side}, {args.device}"
    )
    report = {
        "benchmark": "tile_memory",
        "side": args.side,
        "windows": len(plan.positions),
        "window": list(plan.window),
        "windows_per_pass": plan.batch_size,
        "peak_rss_gib": round(run["peak_rss_bytes"] / GIB, 3),
        "seconds": round(run["seconds"], 2),
        "baseline_rss_gib": round(base["peak_rss_bytes"] / GIB, 3),
        "blend_buffer_gib": round(plan.buffer_bytes(predictor.num_classes) / GIB, 3),
        "agreement": agree,
        "agreement_image": {"side": args.whole_side, **agree_plan},
    }
    finish(report, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
