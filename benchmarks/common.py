"""Helpers shared by the speed benchmarks: data paths, interleaved timing, the naive pipeline, reporting.

The *naive pipeline* is what a typical hand-written PyTorch segmentation script
does, written once here so that every benchmark compares segkit against the same
code: decode each file with PIL when it is needed, letterbox it with PIL, turn it
into a float32 contiguous NCHW tensor with torchvision, and run a batch of one
image, with no workers, no cache and no memory-format or precision tricks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target, append_targets, machine_info  # noqa: E402  (sibling module)
from serve_load import random_checkpoint  # noqa: E402  (the random-weight checkpoint of the serve benchmark)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets"
ISBI = ("isbi2012_membrane", "train")
DUBAI = ("dubai_aerial",)
VAL_FRACTION = 0.2  # the split everybody uses: segkit.training.trainer.split_by_name(names, 0.2)


# ------------------------------------------------------------------ arguments, data
def add_common_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """``--data``, ``--quick``, ``--repeats``, ``--no-report``: the options every benchmark has."""
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"datasets folder (default $SEGKIT_DATA, else {DEFAULT_DATA})",
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run of the script")
    parser.add_argument("--repeats", type=int, default=None, help=f"timed repeats per arm (default {repeats})")
    parser.add_argument(
        "--no-report", action="store_true", help="print the JSON only; do not append to benchmarks/README.md"
    )
    parser.set_defaults(default_repeats=repeats)


def resolve_repeats(args: argparse.Namespace, quick_repeats: int = 2) -> int:
    repeats = args.repeats if args.repeats is not None else (quick_repeats if args.quick else args.default_repeats)
    if repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    return repeats


def data_root(value: Path | None) -> Path:
    """The datasets folder: ``--data``, else ``$SEGKIT_DATA``, else ``../shared/datasets`` of the repository."""
    root = value or Path(os.environ.get("SEGKIT_DATA", DEFAULT_DATA))
    if not root.is_dir():
        raise SystemExit(f"datasets folder {root} not found: pass --data or set SEGKIT_DATA")
    return root


def dataset_dir(root: Path, parts: Sequence[str]) -> Path:
    folder = root.joinpath(*parts)
    if not folder.is_dir():
        raise SystemExit(f"{folder} not found (see {root / 'README.md'})")
    return folder


def image_mask_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` files of an ``images/`` + ``masks/`` folder, paired by stem, sorted by name."""
    masks = {path.stem: path for path in (folder / "masks").iterdir() if path.is_file()}
    pairs = [(image, masks[image.stem]) for image in sorted((folder / "images").iterdir()) if image.stem in masks]
    if not pairs:
        raise SystemExit(f"{folder}: no image/mask pairs")
    return sorted(pairs, key=lambda pair: pair[0].stem)


def isbi_split(root: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """ISBI 2012 training pairs split as segkit splits them (``split_by_name`` by sample name, 0.2)."""
    from segkit.data.sources import split_by_name

    pairs = image_mask_pairs(dataset_dir(root, ISBI))
    train, val = split_by_name([image.stem for image, _ in pairs], VAL_FRACTION)
    return [pairs[i] for i in train], [pairs[i] for i in val]


def setup_logging() -> None:
    """Progress messages (segkit's INFO logs included) on stderr; stdout stays the JSON report."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def copy_class_files(source: Path, target: Path) -> None:
    """The class list files of a dataset folder (those it has) copied to another."""
    for name in ("class_names.txt", "classes.json"):
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)


def subset(train: Path, stems: Sequence[str], folder: Path) -> Path:
    """A dataset folder (made afresh) of the ``stems`` of ``train``: links to its images and masks, its class files."""
    shutil.rmtree(folder, ignore_errors=True)
    for part in ("images", "masks"):
        (folder / part).mkdir(parents=True)
        files = {path.stem: path for path in (train / part).iterdir()}
        for stem in stems:
            (folder / part / files[stem].name).symlink_to(files[stem].resolve())
    copy_class_files(train, folder)
    return folder


def calibrated_checkpoint(
    path: Path, images: Sequence[np.ndarray], img_size: int, resize: str = "letterbox", batches: int = 4
) -> Path:
    """The default 2-class U-Net with random weights and BatchNorm statistics measured on real images.

    Freshly initialised BatchNorm statistics (mean 0, variance 1) do not match the
    activations, and such a network predicts one class everywhere, so that any two
    ways of predicting agree trivially. A few forward passes over random
    ``img_size`` crops of ``images`` in training mode (no gradients, cumulative
    averages) make the masks vary from pixel to pixel; speed does not change.
    """
    from dataclasses import replace

    from segkit.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from segkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize

    torch.manual_seed(0)  # the same random weights in every run
    random_checkpoint("unet", 2, img_size, path)
    state = load_checkpoint(path)
    model = state.build_model()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative moving average over the calibration batches
    rng = np.random.default_rng(0)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            image = images[int(rng.integers(len(images)))]
            top = int(rng.integers(image.shape[0] - img_size + 1))
            left = int(rng.integers(image.shape[1] - img_size + 1))
            crop = torch.from_numpy(np.ascontiguousarray(image[top : top + img_size, left : left + img_size]))
            model(normalize(crop.permute(2, 0, 1)[None], IMAGENET_MEAN, IMAGENET_STD))
    state.card.preprocess = replace(state.card.preprocess, resize=resize)
    save_checkpoint(Checkpoint(state.card, model.state_dict()), path)
    return path


# ------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU, where every op is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_interleaved(arms: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Work units per second of every arm, ``repeats`` times, the arms taking turns.

    Each arm is a callable doing one chunk of work and returning how many units
    (images, pixels) it processed; it must finish its device work before returning.
    Taking turns (arm A, B, C, A, B, C, ...) spreads slow phases of a shared
    machine over all arms instead of penalising whichever ran during them.
    """
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(repeats):
        for name, arm in arms.items():
            start = time.perf_counter()
            units = arm()
            seconds = time.perf_counter() - start
            rates[name].append(units / seconds)
            log(f"  repeat {repeat + 1}/{repeats} {name}: {units / seconds:.4g} /s ({seconds:.1f} s)")
    return rates


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def rate_summary(values: Sequence[float]) -> dict[str, Any]:
    """Median and every repeat of a list of rates (JSON-ready)."""
    return {"median": round(median(values), 4), "repeats": [round(value, 4) for value in values]}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


class Stopwatch:
    """Wall time with pauses (evaluation done for the benchmark itself is not charged to an arm)."""

    def __init__(self) -> None:
        self._total = 0.0
        self._since: float | None = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self._total += time.perf_counter() - self._since
            self._since = None

    def resume(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    @property
    def seconds(self) -> float:
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return self._total + running


def matmul_peak(dtype: torch.dtype, size: int, repeats: int, device: torch.device) -> float:
    """Best FLOP/s of ``repeats`` ``size x size`` by ``size x size`` ``torch.mm`` in ``dtype`` (2 n^3 FLOPs each).

    The best rather than the median: a peak is what the hardware can do, and other
    load on the machine only ever lowers a measurement.
    """
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator).to(device, dtype)
    right = torch.randn(size, size, generator=generator).to(device, dtype)
    torch.mm(left, right)  # warm-up: library dispatch, caches
    synchronize(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(left, right)
        synchronize(device)
        rates.append(2 * size**3 / (time.perf_counter() - start))
    return max(rates)


# ----------------------------------------------------------------- naive pipeline
def pil_letterbox(image: Image.Image, size: int, resample: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Scale to fit ``size x size`` keeping the aspect ratio, paste centred on black.

    Returns the square image and the ``(left, top, width, height)`` box of the picture in it.
    """
    scale = min(size / image.width, size / image.height)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    canvas = Image.new(image.mode, (size, size))
    left, top = (size - width) // 2, (size - height) // 2
    canvas.paste(image.resize((width, height), resample), (left, top))
    return canvas, (left, top, width, height)


def naive_image_tensor(path: Path, size: int) -> tuple[torch.Tensor, tuple[int, int, int, int], tuple[int, int]]:
    """``(1, 3, size, size)`` float32 normalised tensor, the picture's box, and the original ``(width, height)``."""
    import torchvision.transforms.functional as TF

    from segkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    boxed, box = pil_letterbox(image, size, Image.BILINEAR)
    tensor = TF.normalize(TF.to_tensor(boxed), IMAGENET_MEAN, IMAGENET_STD)
    return tensor[None], box, image.size


def naive_mask_tensor(path: Path, size: int, binary: bool) -> torch.Tensor:
    """``(1, size, size)`` target: 0/1 float (``mask > 127``) when binary, else int64 class indices."""
    with Image.open(path) as opened:
        mask, _ = pil_letterbox(opened.convert("L"), size, Image.NEAREST)
    array = np.asarray(mask)
    if binary:
        return torch.from_numpy((array > 127).astype(np.float32))[None]
    return torch.from_numpy(array.astype(np.int64))[None]


def naive_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on one logit channel, else cross-entropy: what the usual script uses."""
    if logits.shape[1] == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target)
    return torch.nn.functional.cross_entropy(logits, target)


def naive_train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, pair: tuple[Path, Path], size: int, device: torch.device
) -> float:
    """Decode one pair from disk, letterbox with PIL, one float32 NCHW training step at batch 1; the loss."""
    image, _, _ = naive_image_tensor(pair[0], size)
    logits = model(image.to(device))
    target = naive_mask_tensor(pair[1], size, binary=logits.shape[1] == 1)
    loss = naive_loss(logits, target.to(device))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def naive_predict_file(
    model: torch.nn.Module, image_path: Path, out_path: Path, size: int, device: torch.device
) -> None:
    """One image: PIL open, letterbox, forward at batch 1, argmax, crop, resize back with PIL, save PNG."""
    image, (left, top, width, height), original = naive_image_tensor(image_path, size)
    with torch.no_grad():
        logits = model(image.to(device))
    if logits.shape[1] == 1:
        labels = (logits[0, 0] > 0).to(torch.uint8)
    else:
        labels = logits[0].argmax(0).to(torch.uint8)
    mask = Image.fromarray(labels.cpu().numpy()).crop((left, top, left + width, top + height))
    mask.resize(original, Image.NEAREST).save(out_path)


# ---------------------------------------------------------------------- reporting
def finish(report: dict[str, Any], section: str, targets: Sequence[Target], settings: str, no_report: bool) -> None:
    """Print the JSON report (with the figures' PASS/MISS and the machine) and append it to the README."""
    machine = machine_info()
    report = {**report, "settings": settings, "targets": [target.as_dict() for target in targets], "machine": machine}
    print(json.dumps(report, indent=2, default=str))
    if not no_report:
        append_targets(section, targets, settings, machine)
        log(f"appended {len(targets)} rows to benchmarks/README.md ({section})")
