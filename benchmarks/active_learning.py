"""Active learning: does labelling the images ``segkit suggest`` picks help more than labelling random ones?

For each dataset (``benchmarks/plan_regret.py``'s layouts: every 5th image by sorted name held out;
Dubai's aerial tiles cut into 512 x 512 pieces so that the pool holds enough images) and seed:

1. a random quarter of the training images is labelled; a planned model trains on it for ``--budget``;
2. the next quarter is picked by ``segkit.suggest`` with that model, or at random (the seed's);
3. a model trains from scratch on the half each pick gives, with the same budget;
4. both are scored by ``segkit.evaluate`` on the same held-out images at their original size.

The start model is planned (without the race: ``--no-race``; ``--race`` races); both retrainings
keep its recipe — network and input (``--model``, ``--model-kwargs``, ``--img-size``, ``--resize``,
``--scale`` from its checkpoint) pinned, the rest planned — so that the difference measures the
picks, not the planner's choice on each half: at these short budgets that choice swings the score
more than the picks do (a 2-minute human_segmentation run raced native crops against whole images
at 30 steps each, kept the crops and ended at 0.51 validation mIoU where the same seed's other pick
trained on whole images to 0.68; unraced, the rules chose native crops for one half and whole
images for the other: 0.54 against 0.70).

Reported: per dataset the median over seeds of the suggest and random mIoU and of their
difference; the target is a mean difference of at least 0.02 over the datasets, and no dataset
below -0.01. Every training runs in its own process, as ``segkit train`` does.

    python benchmarks/active_learning.py --budget 4m                       # human_segmentation and Dubai tiles, 3 seeds
    python benchmarks/active_learning.py --datasets crackforest --seeds 1 --budget 2m --no-report
    python benchmarks/active_learning.py --quick --no-report                 # a smoke run: 60 s budgets, one seed

Results of finished runs are kept in ``--work`` (``results.json``): a second call runs only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import data_root, finish, log, setup_logging, subset  # noqa: E402
from plan_regret import layout  # noqa: E402  (the same held-out images as the planner benchmark)

SECTION = "Active learning: segkit suggest against random picks (benchmarks/active_learning.py)"
DATASETS = ("human_segmentation", "dubai_aerial")
SHARE = 0.25  # labelled at the start, and picked next


def recipe_of(checkpoint: Path) -> list[str]:
    """The network and input of a trained model as ``segkit train`` options."""
    from segkit.checkpoint import load_checkpoint

    card = load_checkpoint(checkpoint).card
    preprocess = card.preprocess
    options = ["--model", card.model.name, "--img-size", *(str(side) for side in preprocess.img_size)]
    options += ["--resize", preprocess.resize, "--scale", f"{preprocess.scale:g}"]
    kwargs = card.model.kwargs
    return options + (["--model-kwargs", ",".join(f"{key}={value}" for key, value in kwargs.items())] if kwargs else [])


def train_model(data: Path, out: Path, budget: float, race: bool, recipe: list[str] | None = None) -> Path:
    """``segkit train data --time-budget`` in its own process (``--no-race`` unless ``race``; ``recipe``: more
    options); its best checkpoint."""
    command = [sys.executable, "-m", "segkit", "train", str(data), "--time-budget", f"{budget:g}s"]
    command += ["--out", str(out), "--device", "cpu", "--overwrite", *([] if race else ["--no-race"]), *(recipe or [])]
    finished = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    (out.parent / f"{out.name}.log").write_text(finished.stdout + finished.stderr)
    if finished.returncode != 0:
        raise SystemExit(f"training on {data} failed:\n{finished.stderr[-3000:]}")
    return out / "best.pt"


def one_seed(train: Path, test: Path, folder: Path, seed: int, budget: float, race: bool) -> dict[str, Any]:
    """Start, then suggest and random picks, retrained and scored; the mIoU of each."""
    import segkit

    stems = sorted(path.stem for path in (train / "images").iterdir())
    count = max(1, round(SHARE * len(stems)))
    rng = random.Random(seed)
    start = sorted(rng.sample(stems, count))
    pool = [stem for stem in stems if stem not in start]
    first = train_model(subset(train, start, folder / "start"), folder / "runs" / "start", budget, race)
    unlabeled = subset(train, pool, folder / "pool") / "images"
    suggested = [pick.image.stem for pick in segkit.suggest(first, unlabeled, count=count, device="cpu").picks]
    picks = {"suggest": suggested, "random": sorted(rng.sample(pool, count))}
    scores: dict[str, Any] = {"start": segkit.evaluate(first, test, device="cpu")["mIoU"]}
    recipe = recipe_of(first)
    for how, picked in picks.items():
        model = train_model(subset(train, start + picked, folder / how), folder / "runs" / how, budget, race, recipe)
        scores[how] = segkit.evaluate(model, test, device="cpu")["mIoU"]
        log(f"    seed {seed}, {how}: mIoU {scores[how]:.4f}")
    scores["overlap"] = len(set(picks["suggest"]) & set(picks["random"])) / count
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="datasets folder (default $SEGKIT_DATA or ../shared)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (plan_regret's layouts)")
    parser.add_argument("--budget", default="4m", help="time budget of every training (default 4m)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per dataset (default 3)")
    parser.add_argument("--work", type=Path, help="folder for layouts, runs and results.json (default: temporary)")
    parser.add_argument("--race", action="store_true", help="let every training race its candidate recipes")
    parser.add_argument("--quick", action="store_true", help="crackforest, one seed, 60 s budgets: a smoke run")
    parser.add_argument("--no-report", action="store_true", help="print the JSON only")
    args = parser.parse_args(argv)
    setup_logging()
    from segkit.config import parse_duration

    budget = 60.0 if args.quick else parse_duration(args.budget)
    datasets = ["crackforest"] if args.quick else args.datasets.split(",")
    seeds = 1 if args.quick else args.seeds
    root = data_root(args.data)
    work = args.work or Path(tempfile.mkdtemp(prefix="segkit-active-"))
    store = work / "results.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    targets: list[Target] = []
    differences = []
    for dataset in datasets:
        train, test = layout("dubai_tiles" if dataset == "dubai_aerial" else dataset, root, work / "data")
        done = results.setdefault(f"{dataset}@{budget:g}" + ("-race" if args.race else ""), {})
        log(f"{dataset}: {len(list((train / 'images').iterdir()))} training images, budget {budget:.0f}s")
        for seed in range(seeds):
            if str(seed) not in done:
                folder = work / "runs" / dataset / f"seed_{seed}"
                done[str(seed)] = one_seed(train, test, folder, seed, budget, args.race)
                store.write_text(json.dumps(results, indent=1))
        runs = [done[str(seed)] for seed in range(seeds)]
        difference = statistics.median(run["suggest"] - run["random"] for run in runs)
        differences.append(difference)
        targets += [
            Target(
                f"{dataset}: suggest mIoU (median of {seeds})", statistics.median(r["suggest"] for r in runs), unit=""
            ),
            Target(
                f"{dataset}: random mIoU (median of {seeds})", statistics.median(r["random"] for r in runs), unit=""
            ),
            Target(f"{dataset}: suggest - random (median)", difference, -0.01, unit=""),
        ]
    targets.append(Target("suggest - random, mean over the datasets", statistics.mean(differences), 0.02, unit=""))
    settings = (
        f"{budget:g}s per training ({'raced' if args.race else 'planned, no race'}), {seeds} seed(s); start: {SHARE:.0%} of the training images at random, picks: the "
        f"next {SHARE:.0%}; held out: plan_regret's (every 5th image; DRIVE its test half), scored at original size"
    )
    finish({"results": results}, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
