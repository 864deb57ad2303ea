"""Label errors found by ``segkit audit``: known corruptions of 10 % of the training masks, ranked and named.

For each dataset the training images (as ``benchmarks/plan_regret.py`` lays them out: every 5th
image by sorted name held out, which this benchmark does not use) are copied as segkit reads
them (``segkit.convert_masks``), and 10 % of their masks are corrupted in one known way each,
chosen in turn among those the mask allows:

- ``erase``: one object set to the background (expected kind ``missing``);
- ``blob``: a false disc of a foreground class in the background (``extra``);
- ``swap``: one object given another foreground class (``wrong_class``);
- ``shift``: one object moved by 5-10 px (``boundary``);
- ``dilate``: one object grown by 5-10 px (``boundary``).

On a dataset without a background class (Dubai's land cover) an erased object or a blob takes
a neighbouring class, so its expected kind is ``wrong_class``. The list of corruptions is kept
(``corrupted.json``); ``segkit.audit`` (K-fold training within ``--budget``) ranks every mask.
Reported: the precision of its top k (k = the number corrupted), and of the corrupted regions it
finds (a region overlapping the changed pixels), the share whose kind it names right.

``--draws N`` adds N - 1 more draws of corruptions (seeds ``--seed`` + 1 ...) scored with the same
folds' models, each predicting only its own fold's images (so every probability stays out of
sample; the folds trained on the first draw's masks): more corrupted images for the price of one
prediction pass each, not of K-fold training. The medians over the draws are the figures.
``--rescore`` scores every draw again, the first too, with the folds' models already trained (after
a change in how ``segkit audit`` scores, on the same probabilities).

    python benchmarks/label_audit.py --budget 20m --draws 5             # crackforest and human_segmentation
    python benchmarks/label_audit.py --datasets dubai_aerial --budget 30m --no-report
    python benchmarks/label_audit.py --quick --no-report                 # a smoke run: tiny budget, 30 images
    python benchmarks/label_audit.py --work W --budget 10m --draws 10 --rescore  # the same folds, scored anew

Results are kept in ``--work`` (``results.json``): a second call with the same folder runs only
the datasets still missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Target  # noqa: E402  (sibling module)
from common import data_root, finish, log, setup_logging, subset  # noqa: E402
from plan_regret import layout  # noqa: E402  (the same training images as the planner benchmark)

SECTION = "Label audit: known corruptions found by segkit audit (benchmarks/label_audit.py)"
DATASETS = ("crackforest", "human_segmentation")
CORRUPTIONS = ("erase", "blob", "swap", "shift", "dilate")
SHARE = 0.1
MIN_OBJECT = 60  # pixels: smaller objects are not corrupted (too small to tell from a speck)


def objects(mask: np.ndarray, background: int | None, ignore: int = 255) -> list[tuple[int, np.ndarray]]:
    """``(class, pixels)`` of every connected object of a foreground class, largest first."""
    from scipy import ndimage

    found = []
    for value in np.unique(mask):
        if value in (background, ignore):
            continue
        components, count = ndimage.label(mask == value, structure=np.ones((3, 3), bool))
        for number in range(1, count + 1):
            pixels = components == number
            if pixels.sum() >= MIN_OBJECT:
                found.append((int(value), pixels))
    return sorted(found, key=lambda item: -int(item[1].sum()))


def neighbour_class(mask: np.ndarray, pixels: np.ndarray, ignore: int = 255) -> int:
    """The most common class in a 5 px ring around ``pixels``."""
    from scipy import ndimage

    ring = ndimage.binary_dilation(pixels, iterations=5) & ~pixels & (mask != ignore)
    values = mask[ring]
    return int(np.bincount(values).argmax()) if values.size else 0


def corrupt(
    mask: np.ndarray, how: str, classes: int, background: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, str] | None:
    """``mask`` corrupted ``how`` and the kind audit should name; None when the mask does not allow it."""
    from scipy import ndimage

    found = objects(mask, background)
    foreground = [value for value in range(classes) if value != background]
    out = mask.copy()
    if how == "blob":
        radius = max(4, round(0.05 * min(mask.shape)))
        rows, cols = np.ogrid[: mask.shape[0], : mask.shape[1]]
        for _ in range(50):
            y, x = rng.integers(radius, mask.shape[0] - radius), rng.integers(radius, mask.shape[1] - radius)
            disc = (rows - y) ** 2 + (cols - x) ** 2 <= radius**2
            around = mask[disc]
            if background is not None and np.all(around == background):
                out[disc] = int(rng.choice(foreground))
                return out, "extra"
            if background is None and np.all(around == around[0]) and around[0] != 255:
                out[disc] = int(rng.choice([value for value in foreground if value != around[0]]))
                return out, "wrong_class"
        return None
    if not found:
        return None
    value, pixels = found[int(rng.integers(0, min(3, len(found))))]  # one of the three largest objects
    if how == "erase":
        out[pixels] = background if background is not None else neighbour_class(mask, pixels)
        return out, "missing" if background is not None else "wrong_class"
    if how == "swap":
        others = [other for other in foreground if other != value]
        if not others:
            return None
        out[pixels] = int(rng.choice(others))
        return out, "wrong_class"
    step = int(rng.integers(5, 11))
    if how == "dilate":
        out[ndimage.binary_dilation(pixels, iterations=step) & (mask != 255)] = value
        return out, "boundary"
    dy, dx = (step, 0) if rng.random() < 0.5 else (0, step)
    moved = np.zeros_like(pixels)
    moved[dy:, dx:] = pixels[: pixels.shape[0] - dy, : pixels.shape[1] - dx]
    out[pixels & ~moved] = background if background is not None else neighbour_class(mask, pixels)
    out[moved & (mask != 255)] = value
    return out, "boundary"


def corrupted_copy(train: Path, folder: Path, seed: int, count: int | None) -> tuple[Path, list[dict[str, Any]]]:
    """The training data as segkit reads it, with :data:`SHARE` of its masks corrupted; and the list of what was done."""
    import segkit
    from segkit.data.classes import background_index

    clean = folder / "clean"
    if not clean.exists():
        segkit.convert_masks(train, clean)
    data = folder / "corrupted"
    if (folder / "corrupted.json").exists():
        return data, json.loads((folder / "corrupted.json").read_text())
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(clean, data)
    names = sorted(path.name for path in (data / "masks").iterdir())
    if count is not None:  # a smaller dataset: the first images by name
        for name in names[count:]:
            (data / "masks" / name).unlink()
            next((data / "images").glob(Path(name).stem + ".*")).unlink()
        names = names[:count]
    classes = (data / "class_names.txt").read_text().split("\n")[:-1]
    background = background_index(classes)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(names), max(1, round(SHARE * len(names))), replace=False).tolist())
    done: list[dict[str, Any]] = []
    for position, index in enumerate(chosen):
        path = data / "masks" / names[index]
        mask = np.asarray(Image.open(path))
        for how in [*CORRUPTIONS[position % len(CORRUPTIONS) :], *CORRUPTIONS[: position % len(CORRUPTIONS)]]:
            made = corrupt(mask, how, len(classes), background, rng)
            if made is not None:
                break
        if made is None:
            continue
        changed = made[0] != mask
        rows, cols = np.nonzero(changed)
        Image.fromarray(made[0]).save(path)
        done.append(
            {
                "image": names[index],
                "corruption": how,
                "expected": made[1],
                "pixels": int(changed.sum()),
                "bbox": [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1],
                "width": mask.shape[1],
                "changed": np.flatnonzero(changed).tolist(),  # flat indices: row * width + column
            }
        )
    (folder / "corrupted.json").write_text(json.dumps(done))
    return data, done


def score(ranking: list[dict[str, Any]], corrupted: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision of the top k, and how many corrupted regions were found and named right."""
    by_stem = {Path(item["image"]).stem: item for item in corrupted}
    k = len(corrupted)
    top = [Path(entry["image"]).stem for entry in ranking[:k]]
    found = named = 0
    verdicts = []
    for entry in ranking:
        item = by_stem.get(Path(entry["image"]).stem)
        if item is None:
            continue
        rows, cols = np.divmod(np.asarray(item["changed"], dtype=np.int64), item["width"])
        best, kind = 0, None
        for region in entry["regions"]:  # the region whose box holds most of the changed pixels names the kind
            x0, y0, x1, y1 = region["bbox"]
            inside = int(((cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)).sum())
            if inside > best:
                best, kind = inside, region["kind"]
        found += kind is not None
        named += kind == item["expected"]
        verdicts.append({**{key: item[key] for key in ("image", "corruption", "expected")}, "named": kind})
    return {
        "k": k,
        "precision_at_k": sum(stem in by_stem for stem in top) / k if k else None,
        "found": found,
        "kind_right_share": named / found if found else None,
        "verdicts": verdicts,
    }


def redrawn(train: Path, folder: Path, seed: int, ranking: list[dict[str, Any]]) -> dict[str, Any]:
    """Another draw of corruptions (``seed``) in ``folder / draw_<seed>``, ranked by the first draw's folds' models."""
    import segkit

    draw = folder / f"draw_{seed}"
    draw.mkdir(exist_ok=True)
    if not (draw / "clean").exists():
        (draw / "clean").symlink_to((folder / "clean").resolve())
    data, corrupted = corrupted_copy(train, draw, seed, None)
    folds: dict[int, list[str]] = {}
    for entry in ranking:
        folds.setdefault(entry["fold"], []).append(Path(entry["image"]).stem)
    entries: list[dict[str, Any]] = []
    for fold, stems in sorted(folds.items()):
        model = folder / "out" / "folds" / f"fold_{fold}" / "best.pt"
        entries += segkit.audit(subset(data, stems, draw / f"fold_{fold}"), model=model).to_list()
    entries.sort(key=lambda entry: (entry["score"], entry["image"]))
    return {"corrupted": len(corrupted), "images": len(entries), **score(entries, corrupted)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="datasets folder (default $SEGKIT_DATA or ../shared)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (plan_regret's layouts)")
    parser.add_argument("--budget", default="20m", help="segkit audit's time budget per dataset (default 20m)")
    parser.add_argument("--folds", type=int, default=3, help="K of K-fold training (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="which masks are corrupted, and how")
    parser.add_argument(
        "--draws", type=int, default=1, help="draws of corruptions scored by the same folds (default 1)"
    )
    parser.add_argument("--work", type=Path, help="folder for layouts, audits and results.json (default: temporary)")
    parser.add_argument("--quick", action="store_true", help="crackforest, 30 images, 60 s: a smoke run")
    parser.add_argument(
        "--rescore", action="store_true", help="score every draw again, the first too, with the folds already trained"
    )
    parser.add_argument("--no-report", action="store_true", help="print the JSON only")
    args = parser.parse_args(argv)
    setup_logging()
    import segkit
    from segkit.config import parse_duration

    budget = 60.0 if args.quick else parse_duration(args.budget)
    datasets = ["crackforest"] if args.quick else args.datasets.split(",")
    root = data_root(args.data)
    work = args.work or Path(tempfile.mkdtemp(prefix="segkit-audit-bench-"))
    store = work / "results.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    targets: list[Target] = []
    for dataset in datasets:
        key = f"{dataset}@{budget:g}" + ("-quick" if args.quick else "")
        if key not in results:
            train, _ = layout(dataset, root, work / "data")
            folder = work / "audit" / key
            data, corrupted = corrupted_copy(train, folder, args.seed, 30 if args.quick else None)
            log(f"{dataset}: {len(corrupted)} of {len(list((data / 'masks').iterdir()))} masks corrupted; auditing")
            result = segkit.audit(  # the folds' models stay in out/folds for a second look at the ranking
                data, folds=args.folds, time_budget=budget, json=folder / "audit.json", out=folder / "out"
            )
            ranking = result.to_list()
            results[key] = {"corrupted": len(corrupted), "images": len(ranking), **score(ranking, corrupted)}
            store.write_text(json.dumps(results, indent=1))
        draws = results[key].setdefault("draws", {})
        if args.rescore:
            draws.clear()
        first = args.seed if args.rescore else args.seed + 1
        missing = [seed for seed in range(first, args.seed + args.draws) if str(seed) not in draws]
        if missing:
            folder = work / "audit" / key
            train, _ = layout(dataset, root, work / "data")
            ranking = json.loads((folder / "audit.json").read_text())
        for seed in missing:
            draws[str(seed)] = redrawn(train, folder, seed, ranking)
            log(f"{dataset}, draw {seed}: precision of the top k {draws[str(seed)]['precision_at_k']:.2f}")
            store.write_text(json.dumps(results, indent=1))
        done = [
            draws.get(str(args.seed), results[key]),  # the first draw as rescored, if it was
            *(draws[str(seed)] for seed in range(args.seed + 1, args.seed + args.draws)),
        ]
        found = sum(draw["found"] for draw in done)
        targets += [
            Target(
                f"{dataset}: precision of the top k (k = {done[0]['k']} corrupted; median of {len(done)} draws)",
                statistics.median(draw["precision_at_k"] for draw in done),
                0.7,
                unit="",
            ),
            Target(
                f"{dataset}: kind named right ({found} corrupted regions found in {len(done)} draws)",
                sum(draw["kind_right_share"] * draw["found"] for draw in done) / found if found else None,
                0.6,
                unit="",
            ),
        ]
    settings = (
        f"segkit audit, {args.folds}-fold training within {budget:g}s per dataset; {SHARE:.0%} of the training "
        f"masks corrupted (seed {args.seed}, and {args.draws - 1} more draws scored by the same folds), one of "
        f"{', '.join(CORRUPTIONS)} each"
    )
    finish({"results": results}, SECTION, targets, settings, args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
