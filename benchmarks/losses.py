"""Which loss finds the small classes: the same recipe trained with each candidate loss, side by side.

On imbalanced data (Dubai aerial: 6 classes, Unlabeled 0.5 % of the pixels; CrackForest:
cracks 1.6 %), every arm trains segkit's planned CPU recipe (U-Net width 16, the planned
input size and batch, bf16) for the same number of epochs and seed, changing only the loss:

- ``ce+dice``: cross-entropy plus Dice (segkit's default before this benchmark);
- ``ohem+dice``: cross-entropy over the hard pixels only (online hard example mining) plus Dice;
- ``ce+dice`` with ``--class-weights auto`` (inverse median frequency);
- ``ce+lovasz``: cross-entropy plus the Lovász-softmax surrogate of IoU.

Every arm is scored by the same function at each validation image's original size (val =
every 5th image by sorted name). Epochs rather than time make the ranking the same on any
device, so the comparison can run where it is fast (a GPU).

    python benchmarks/losses.py --device cuda          # a few minutes on a GPU
    python benchmarks/losses.py --quick --no-report
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import add_common_arguments, data_root, finish, log, setup_logging  # noqa: E402
from recipe import DATASETS, load_split, score, split_folder  # noqa: E402

SECTION = "Loss choice on imbalanced data (benchmarks/losses.py)"
ARMS = {
    "ce+dice": {"loss": "ce+dice"},
    "ohem+dice": {"loss": "ohem+dice"},
    "ce+dice, class weights": {"loss": "ce+dice", "class_weights": "auto"},
    "ce+lovasz": {"loss": "ce+lovasz"},
}
# The planned CPU recipe of each dataset (`segkit plan` on the 2-core machine), fixed here.
RECIPES = {
    "dubai": {"img_size": 384, "resize": "crop", "batch_size": 4, "epochs": 60, "val_every": 10},
    "crackforest": {"img_size": [320, 480], "resize": "letterbox", "batch_size": 3, "epochs": 25, "val_every": 5},
}


def run(name: str, data: Path, val: tuple, options: dict[str, Any], device: str, epochs: int, out: Path) -> dict:
    import segkit
    from segkit.prediction.predictor import Predictor

    started = time.monotonic()
    recipe = {**RECIPES[name], "epochs": epochs}
    result = segkit.train(
        data=str(data),
        out=str(out),
        device=device,
        model="unet",
        model_kwargs={"base_channels": 16},
        precision="bf16",
        seed=0,
        pretrained=False,
        progress=False,
        **recipe,
        **options,
    )
    predictor = Predictor.from_checkpoint(result.best_checkpoint, device=device)
    metrics = score(predictor.predict, *val)
    return {"metrics": metrics, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, repeats=1)
    parser.add_argument("--datasets", default="dubai,crackforest")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arms", help=f"semicolon-separated subset of: {'; '.join(ARMS)} (default all)")
    args = parser.parse_args(argv)
    setup_logging()
    root = data_root(args.data)
    report: dict[str, Any] = {}
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="segkit-losses-") as temp:
        work = Path(temp)
        for name in args.datasets.split(","):
            folder, masks, _ = DATASETS[name]
            data = split_folder(root / folder, masks, work / name)
            val = load_split(data, "val")
            classes = val[2]
            epochs = 1 if args.quick else RECIPES[name]["epochs"]
            report[name] = {}
            chosen = [arm.strip() for arm in args.arms.split(";")] if args.arms else list(ARMS)
            for arm, options in ((arm, ARMS[arm]) for arm in chosen):
                log(f"{name}: {arm}")
                outcome = run(
                    name, data, val, options, args.device, epochs, work / "runs" / name / arm.replace(" ", "_")
                )
                metrics = outcome["metrics"]
                per_class = {c: metrics["per_class"][c]["iou"] for c in classes}
                rarest = min(classes, key=lambda c: metrics["per_class"][c]["support"] or float("inf"))
                report[name][arm] = {
                    "mIoU": metrics["mIoU"],
                    "per_class_iou": per_class,
                    "seconds": round(outcome["seconds"], 1),
                }
                log(
                    f"RESULT {name} {arm}: mIoU {metrics['mIoU']:.4f}, {rarest} IoU {per_class[rarest]:.4f}, "
                    f"per class {json.dumps({c: round(v or 0, 3) for c, v in per_class.items()})}"
                )
                targets.append(Target(f"{name}: {arm}: mIoU", metrics["mIoU"], None, unit=""))
                targets.append(Target(f"{name}: {arm}: IoU of {rarest} (rarest)", per_class[rarest], None, unit=""))
    settings = (
        "planned CPU recipe (U-Net 16, bf16) at fixed epochs: "
        + ", ".join(f"{n} {RECIPES[n]['epochs']}" for n in args.datasets.split(","))
        + f"; device {args.device}"
        + ("; --quick" if args.quick else "")
    )
    finish({"datasets": report}, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
