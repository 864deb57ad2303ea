"""Prediction throughput: ``segkit predict`` against the bare forward pass and a naive script; ORT vs eager.

A folder of ``--images`` images of four sizes (crops of the Dubai aerial and ISBI
2012 images, as JPEG and PNG) is predicted, side by side and taking turns, by

- ``segkit``: the ``segkit predict CHECKPOINT FOLDER --out DIR`` command, run in-process
  through ``segkit.cli.main`` (reads, letterboxes, batches, undoes the resize, writes PNGs);
- ``bare``: only the network's forward passes over the same images already
  preprocessed into batches of ``--batch-size`` (segkit's preprocessing);
- ``naive``: one image at a time: PIL open, letterbox, forward at batch 1, argmax,
  crop, resize back with PIL, save.

Then eager PyTorch and ONNX Runtime (the file ``segkit export`` writes, run through
segkit's :class:`~segkit.prediction.onnx_backend.OnnxBackend`) on 512 x 512
inputs, and the share of pixels whose predicted class agrees between them.

Then whole processes, start-up included (issue 12's deployment target): ``segkit
predict model.onnx`` against ``segkit predict best.pt`` over ``--cli-images`` images
of 512 x 512, each a fresh ``python -m segkit`` process, taking turns. The ONNX arm
runs under ``--light-python`` (the interpreter of a ``pip install "segkit[onnx]"``
environment, without PyTorch; default: this one, whose ONNX path imports no
PyTorch either).

The checkpoint is the default U-Net with random weights and BatchNorm statistics
measured on real images (:func:`common.calibrated_checkpoint`) unless ``--checkpoint``
is given: speed does not depend on the weights, and the masks vary from pixel to
pixel, so that the agreement check is not trivially met.

    python benchmarks/predict_throughput.py               # full run (5-9 min on 2 cores)
    python benchmarks/predict_throughput.py --quick --no-report
    python benchmarks/predict_throughput.py --light-python /tmp/light/bin/python   # ONNX arm in a torch-free venv
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import (  # noqa: E402
    DUBAI,
    ISBI,
    add_common_arguments,
    calibrated_checkpoint,
    data_root,
    dataset_dir,
    finish,
    log,
    measure_interleaved,
    median,
    naive_predict_file,
    rate_summary,
    ratio,
    resolve_repeats,
    setup_logging,
    synchronize,
)

SECTION = "Prediction throughput (benchmarks/predict_throughput.py)"
TARGET_VS_BARE = 0.85
TARGET_VS_NAIVE = 10.0
TARGET_ORT = 1.3
TARGET_AGREEMENT = 99.9  # percent of pixels
TARGET_CLI_ONNX = 2.0  # segkit predict model.onnx (torch-free) / segkit predict best.pt, processes
SIZES = ((256, 256), (384, 512), (512, 512), (600, 800))  # (height, width) of the generated images
ORT_SIDE = 512


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repeats=2)
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to predict with (default: random-weight U-Net)")
    parser.add_argument("--images", type=int, default=None, help="images in the folder (default 200, quick 12)")
    parser.add_argument("--img-size", type=int, default=256, help="input side of the random checkpoint (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="segkit predict --batch-size (default 8, segkit's)")
    parser.add_argument(
        "--ort-images", type=int, default=None, help="512x512 inputs for ORT vs eager (default 6, quick 2)"
    )
    parser.add_argument("--device", default="cpu", help="device of every arm (default cpu)")
    parser.add_argument(
        "--cli-images", type=int, default=None, help="512x512 images of the process arms (default 20, quick 4)"
    )
    parser.add_argument(
        "--light-python",
        type=Path,
        default=Path(sys.executable),
        help="python of a segkit[onnx] environment for the `segkit predict model.onnx` process (default: this one)",
    )
    args = parser.parse_args(argv)
    if args.cli_images is None:
        args.cli_images = 4 if args.quick else 20
    if args.images is None:
        args.images = 12 if args.quick else 200
    if args.ort_images is None:
        args.ort_images = 2 if args.quick else 6
    if args.quick:
        args.img_size = min(args.img_size, 128)
    return args


# -------------------------------------------------------------------------- data
def source_images(root: Path) -> list[Image.Image]:
    """RGB originals to crop from: the Dubai tiles' images and the ISBI slices (grey as RGB)."""
    files = sorted((dataset_dir(root, DUBAI) / "images").iterdir()) + sorted(
        (dataset_dir(root, ISBI) / "images").iterdir()
    )
    images = []
    for path in files:
        with Image.open(path) as opened:
            images.append(opened.convert("RGB"))
    return images


def crops(
    images: list[Image.Image], count: int, sizes: tuple[tuple[int, int], ...], seed: int = 0
) -> list[Image.Image]:
    """``count`` random crops, the sizes taking turns, each from a source large enough for it."""
    rng = np.random.default_rng(seed)
    result = []
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        fitting = [image for image in images if image.height >= height and image.width >= width]
        image = fitting[int(rng.integers(len(fitting)))]
        top, left = int(rng.integers(image.height - height + 1)), int(rng.integers(image.width - width + 1))
        result.append(image.crop((left, top, left + width, top + height)))
    return result


def write_folder(images: list[Image.Image], folder: Path) -> list[Path]:
    """Save the crops, every other one as JPEG (quality 90), the rest as PNG."""
    folder.mkdir(parents=True)
    paths = []
    for index, image in enumerate(images):
        jpeg = index % 2 == 1
        path = folder / f"image_{index:04d}{'.jpg' if jpeg else '.png'}"
        image.save(path, **({"quality": 90} if jpeg else {}))
        paths.append(path)
    return paths


# -------------------------------------------------------------------------- arms
def segkit_arm(checkpoint: Path, folder: Path, out_root: Path, batch_size: int, device: str, count: int):
    """``segkit predict`` through the CLI entry point; its table on stdout is swallowed."""
    from segkit.cli import main as segkit_main

    runs = itertools.count()

    def run() -> float:
        out = out_root / f"segkit_{next(runs)}"
        arguments = [
            "predict",
            str(checkpoint),
            str(folder),
            "--out",
            str(out),
            "--batch-size",
            str(batch_size),
            "--device",
            device,
        ]
        with contextlib.redirect_stdout(io.StringIO()):
            code = segkit_main(arguments)
        if code != 0:
            raise RuntimeError(f"segkit predict exited with {code}")
        shutil.rmtree(out)
        return float(count)

    return run


def bare_arm(predictor: Any, paths: list[Path], batch_size: int):
    """Forward passes only, over the images preprocessed by segkit's own preprocessing."""
    from segkit.data.io import read_image
    from segkit.data.transforms import normalize, resize_image

    batches = []
    for start in range(0, len(paths), batch_size):
        resized = [
            resize_image(read_image(path), predictor.preprocess)[0] for path in paths[start : start + batch_size]
        ]
        batch = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).to(predictor.device)
        batches.append(normalize(batch, predictor.preprocess.mean, predictor.preprocess.std))

    @torch.inference_mode()
    def run() -> float:
        for batch in batches:
            predictor.model(batch)
        synchronize(predictor.device)
        return float(len(paths))

    return run


def naive_arm(model: torch.nn.Module, paths: list[Path], out_root: Path, img_size: int, device: torch.device):
    runs = itertools.count()

    def run() -> float:
        out = out_root / f"naive_{next(runs)}"
        out.mkdir()
        for path in paths:
            naive_predict_file(model, path, out / f"{path.stem}.png", img_size, device)
        shutil.rmtree(out)
        return float(len(paths))

    return run


def fresh_model(checkpoint: Path, device: str) -> torch.nn.Module:
    """The checkpoint's network as a hand-written script would load it: build, load the state dict, eval."""
    from segkit.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint).build_model().to(device).eval()


def ort_inputs(images: list[Image.Image], count: int, preprocess: Any) -> list[torch.Tensor]:
    """``count`` real 512 x 512 crops, normalised as segkit does, as ``(1, 3, 512, 512)`` tensors."""
    from segkit.data.transforms import normalize

    tensors = []
    for crop in crops(images, count, ((ORT_SIDE, ORT_SIDE),), seed=1):
        array = torch.from_numpy(np.array(crop)).permute(2, 0, 1)[None]
        tensors.append(normalize(array, preprocess.mean, preprocess.std))
    return tensors


def compare_ort(
    predictor: Any, checkpoint: Path, inputs: list[torch.Tensor], workdir: Path, repeats: int
) -> dict[str, Any]:
    """Eager vs ONNX Runtime forward passes at 512 x 512 (taking turns) and their argmax agreement.

    Eager runs as segkit's Predictor runs it (NCHW float32); an eager channels_last copy
    of the model is timed too, for comparison.
    """
    from segkit.exporters.onnx import export_onnx
    from segkit.prediction.onnx_backend import OnnxBackend

    log("exporting to ONNX with segkit.exporters.onnx.export_onnx")
    exported = export_onnx(checkpoint, workdir / "model.onnx")
    onnx_model = OnnxBackend(exported.path, device=str(predictor.device))
    arrays = [tensor.numpy() for tensor in inputs]

    def onnx_forward() -> float:
        for array in arrays:
            onnx_model.forward(array)
        return float(len(arrays))

    def forward(model: torch.nn.Module, memory_format: torch.memory_format = torch.contiguous_format):
        @torch.inference_mode()
        def run() -> float:
            for tensor in inputs:
                model(tensor.to(predictor.device).contiguous(memory_format=memory_format))
            synchronize(predictor.device)
            return float(len(inputs))

        return run

    channels_last = copy.deepcopy(predictor.model).to(memory_format=torch.channels_last)
    arms = {
        "eager": forward(predictor.model),
        "onnxruntime": onnx_forward,
        "eager_channels_last": forward(channels_last, torch.channels_last),
    }
    for arm in arms.values():
        arm()
    rates = measure_interleaved(arms, repeats)
    agree = total = 0
    counts = torch.zeros(predictor.num_classes, dtype=torch.int64)
    with torch.inference_mode():
        for tensor in inputs:
            eager = predictor.model(tensor.to(predictor.device)).argmax(1)
            ort = torch.from_numpy(onnx_model.forward(tensor.numpy()).argmax(1)).to(eager.device)
            agree += int((eager == ort).sum())
            total += eager.numel()
            counts += torch.bincount(eager.reshape(-1).cpu(), minlength=predictor.num_classes)
    return {
        "rates": rates,
        "agreement": agree / total,
        "eager_class_shares": [round(share, 4) for share in (counts / total).tolist()],
        "model": exported.path,
        "exporter": exported.exporter,
        "opset": exported.opset,
        "max_abs_diff_at_export": exported.max_abs_diff,
        "providers": onnx_model.providers,
    }


def cli_arm(python: Path, model: Path, folder: Path, out_root: Path, count: int, name: str):
    """``python -m segkit predict MODEL FOLDER`` as a fresh process (start-up included), on the CPU."""
    runs = itertools.count()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}

    def run() -> float:
        out = out_root / f"{name}_{next(runs)}"
        command = [
            str(python),
            "-m",
            "segkit",
            "predict",
            str(model),
            str(folder),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
        shutil.rmtree(out)
        return float(count)

    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    repeats = resolve_repeats(args)
    from segkit.prediction.predictor import Predictor

    root = data_root(args.data)
    originals = source_images(root)
    with tempfile.TemporaryDirectory(prefix="segkit-predict-throughput-") as folder:
        work = Path(folder)
        arrays = [np.asarray(image) for image in originals]
        checkpoint = args.checkpoint or calibrated_checkpoint(work / "random.pt", arrays, args.img_size)
        paths = write_folder(crops(originals, args.images, SIZES), work / "images")
        predictor = Predictor.from_checkpoint(checkpoint, device=args.device)
        img_size = predictor.preprocess.img_size[0]
        arms = {
            "segkit": segkit_arm(checkpoint, work / "images", work, args.batch_size, args.device, len(paths)),
            "bare": bare_arm(predictor, paths, args.batch_size),
            "naive": naive_arm(fresh_model(checkpoint, args.device), paths, work, img_size, predictor.device),
        }
        log("warm-up: bare forward and naive on a few images")
        warm_paths = paths[: args.batch_size]
        bare_arm(predictor, warm_paths, args.batch_size)()
        naive_arm(fresh_model(checkpoint, args.device), warm_paths[:2], work, img_size, predictor.device)()
        log(f"measuring {repeats} repeats over {len(paths)} images")
        rates = measure_interleaved(arms, repeats)
        ort = compare_ort(
            predictor, checkpoint, ort_inputs(originals, args.ort_images, predictor.preprocess), work, repeats
        )
        cli_folder = work / "cli_images"
        write_folder(crops(originals, args.cli_images, ((ORT_SIDE, ORT_SIDE),), seed=2), cli_folder)
        cli_arms = {
            "cli_pt": cli_arm(Path(sys.executable), checkpoint, cli_folder, work, args.cli_images, "cli_pt"),
            "cli_onnx": cli_arm(args.light_python, ort["model"], cli_folder, work, args.cli_images, "cli_onnx"),
        }
        log(f"measuring whole `segkit predict` processes over {args.cli_images} images, {repeats} repeats")
        cli_rates = measure_interleaved(cli_arms, repeats)
        ort["model"] = str(ort["model"].name)

    med = {name: median(values) for name, values in rates.items()}
    ort_med = {name: median(values) for name, values in ort["rates"].items()}
    cli_med = {name: median(values) for name, values in cli_rates.items()}
    targets = [
        Target("segkit predict / bare forward (images/s)", ratio(med["segkit"], med["bare"]), TARGET_VS_BARE),
        Target("segkit predict / naive script (images/s)", ratio(med["segkit"], med["naive"]), TARGET_VS_NAIVE),
        Target(
            f"ONNX Runtime / eager at {ORT_SIDE}x{ORT_SIDE} (images/s)",
            ratio(ort_med["onnxruntime"], ort_med["eager"]),
            TARGET_ORT,
        ),
        Target(
            f"eager channels_last / eager NCHW at {ORT_SIDE}x{ORT_SIDE} (images/s)",
            ratio(ort_med["eager_channels_last"], ort_med["eager"]),
        ),
        Target("ONNX Runtime vs eager mask agreement", 100 * ort["agreement"], TARGET_AGREEMENT, unit="%"),
        Target(
            f"segkit predict model.onnx / best.pt, {args.cli_images} images {ORT_SIDE}x{ORT_SIDE}, processes",
            ratio(cli_med["cli_onnx"], cli_med["cli_pt"]),
            TARGET_CLI_ONNX,
        ),
        Target("segkit predict speed", med["segkit"], unit="images/s"),
    ]
    sizes = ", ".join(f"{w}x{h}" for h, w in SIZES)
    settings = (
        f"{'random-weight unet' if args.checkpoint is None else args.checkpoint.name}, input {img_size}, "
        f"{len(paths)} images ({sizes}), batch {args.batch_size}, {predictor.device.type}, {repeats} repeats"
    )
    report = {
        "benchmark": "predict_throughput",
        "images_per_second": {name: rate_summary(values) for name, values in rates.items()},
        "ort_vs_eager": {
            "images_per_second": {name: rate_summary(values) for name, values in ort["rates"].items()},
            **{key: value for key, value in ort.items() if key != "rates"},
            "side": ORT_SIDE,
            "inputs": args.ort_images,
        },
        "cli_processes": {
            "images_per_second": {name: rate_summary(values) for name, values in cli_rates.items()},
            "images": args.cli_images,
            "light_python": str(args.light_python),
        },
    }
    finish(report, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
