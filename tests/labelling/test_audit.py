"""segkit audit: label quality from out-of-sample probabilities, region kinds, outputs, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_checkpoint
from PIL import Image

import segkit
from segkit.checkpoint import save_checkpoint
from segkit.cli import main
from segkit.errors import SegkitError
from segkit.labelling.regions import KINDS, disputed_regions, label_quality

CLASSES = ["background", "red", "blue"]
COLOURS = {1: (220, 40, 40), 2: (40, 60, 220)}
TINY = {"model": "unet", "model_kwargs": {"base_channels": 4, "depth": 2}, "img_size": 64, "precision": "32"}


def shapes(root: Path, count: int = 12, seed: int = 0) -> Path:
    """64 x 64 photos of a red square (left half) and a blue one (right half) on grey noise; the bottom rows empty."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    (root / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    for index in range(count):
        image = rng.integers(20, 90, (64, 64, 3)).astype(np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        for value, left in ((1, 2), (2, 34)):
            side = int(rng.integers(14, 24))
            top, x = int(rng.integers(0, 44 - side)), left + int(rng.integers(0, 29 - side))
            image[top : top + side, x : x + side] = COLOURS[value]
            mask[top : top + side, x : x + side] = value
        Image.fromarray(image).save(root / "images" / f"im{index:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{index:02d}.png")
    return root


def corrupt(data: Path, name: str, change) -> None:
    path = data / "masks" / f"{name}.png"
    mask = np.asarray(Image.open(path)).copy()
    change(mask)
    Image.fromarray(mask).save(path)


def erase_red(mask: np.ndarray) -> None:
    mask[mask == 1] = 0


def add_blob(mask: np.ndarray) -> None:
    mask[50:60, 20:32] = 2  # in the empty bottom rows


def blue_to_red(mask: np.ndarray) -> None:
    mask[mask == 2] = 1


@pytest.fixture(scope="module")
def clean_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(clean data, a model trained on it)``: a few seconds of training."""
    root = tmp_path_factory.mktemp("audit")
    data = shapes(root / "clean")
    result = segkit.train(
        data=str(data), out=str(root / "run"), epochs=30, lr=1e-2, batch_size=4, device="cpu", val_split=0.25,
        plan=False, progress=False, **TINY,
    )  # fmt: skip
    return data, result.best_checkpoint


def certain(prediction: np.ndarray, classes: int = 3, confidence: float = 0.9) -> np.ndarray:
    probabilities = np.full((classes, *prediction.shape), (1 - confidence) / (classes - 1), np.float32)
    for value in range(classes):
        probabilities[value][prediction == value] = confidence
    return probabilities


def kinds_of(labels: np.ndarray, truth: np.ndarray, classes=CLASSES, background: int | None = 0) -> list[tuple]:
    regions, _ = disputed_regions(labels, certain(truth, len(classes)), truth, classes, background)
    return [(region.kind, region.class_name, region.area, region.bbox) for region in regions]


def test_region_kinds_on_hand_made_arrays() -> None:
    truth = np.zeros((64, 64), np.uint8)
    truth[10:30, 10:30] = 1
    truth[40:55, 40:60] = 2
    erased, blob, swapped, shifted, swollen, nudged, ignored = (truth.copy() for _ in range(7))
    erased[10:30, 10:30] = 0
    blob[2:8, 45:55] = 1
    swapped[40:55, 40:60] = 1
    shifted[10:30, 10:30] = 0
    shifted[16:36, 10:30] = 1  # the car's outline 6 px low
    swollen[5:35, 5:35] = 1  # 5 px too wide all round
    swollen[40:55, 40:60] = 2
    nudged[10:30, 30:32] = 1  # 2 px: the usual disagreement along an edge
    ignored[10:30, 10:30] = 255
    assert kinds_of(erased, truth) == [("missing", "red", 400, (10, 10, 30, 30))]
    assert kinds_of(blob, truth) == [("extra", "red", 60, (45, 2, 55, 8))]
    assert kinds_of(swapped, truth) == [("wrong_class", "red", 300, (40, 40, 60, 55))]
    assert kinds_of(shifted, truth) == [
        ("boundary", "red", 120, (10, 10, 30, 16)),
        ("boundary", "red", 120, (10, 30, 30, 36)),
    ]
    assert kinds_of(swollen, truth) == [("boundary", "red", 500, (5, 5, 35, 35))]
    assert kinds_of(nudged, truth) == [] and kinds_of(ignored, truth) == [] and kinds_of(truth, truth) == []
    unsure = certain(truth, confidence=0.4)  # 0.4 against 0.3 for the label: too close to dispute
    assert disputed_regions(erased, unsure, truth, CLASSES, 0)[0] == []
    regions, kinds = disputed_regions(erased, certain(truth), truth, CLASSES, 0)
    assert regions[0].label == "background" and regions[0].predicted == "red" and regions[0].confidence > 0.89
    assert int((kinds == 1).sum()) == 400 and set(np.unique(kinds)) == {0, 1}


def test_a_thin_object_drawn_a_few_pixels_off_is_a_boundary_not_two_objects() -> None:
    truth = np.zeros((64, 64), np.uint8)
    truth[20:22, 5:60] = 1  # a crack 2 px wide
    shifted, elsewhere = np.zeros_like(truth), np.zeros_like(truth)
    shifted[28:30, 5:60] = 1  # drawn 8 px low: no band, an extra line and a missing one side by side
    elsewhere[50:52, 5:60] = 1  # 30 px away: another object
    assert [kind for kind, *_ in kinds_of(shifted, truth)] == ["boundary", "boundary"]
    assert sorted(kind for kind, *_ in kinds_of(elsewhere, truth)) == ["extra", "missing"]
    broken = truth.copy()
    broken[:, 20:23] = broken[:, 40:43] = 0  # the model sees the crack in three pieces
    assert [kind for kind, *_ in kinds_of(shifted, broken)] == ["boundary"] * 4
    regions, kinds = disputed_regions(shifted, certain(truth), truth, CLASSES, 0)
    assert set(np.unique(kinds)) == {0, 1 + KINDS.index("boundary")}  # the page outlines them as boundaries


def test_without_a_background_class_every_dispute_is_a_class_or_an_outline() -> None:
    truth = np.zeros((48, 48), np.uint8)  # land-cover: water everywhere but a field
    truth[10:30, 10:30] = 1
    wrong = truth.copy()
    wrong[10:30, 10:30] = 0
    assert kinds_of(wrong, truth, ["water", "field"], None) == [("wrong_class", "water", 400, (10, 10, 30, 30))]


def test_label_quality_is_cleanlabs_and_leaves_ignored_pixels_out() -> None:
    from cleanlab.segmentation.rank import get_label_quality_scores

    truth = np.zeros((32, 32), np.uint8)
    truth[8:20, 8:20] = 1
    probabilities = certain(truth, 2)
    wrong = truth.copy()
    wrong[8:20, 8:20] = 0
    expected, _ = get_label_quality_scores(wrong[None], probabilities[None], verbose=False)
    assert label_quality(wrong, probabilities) == pytest.approx(float(expected[0]))
    assert label_quality(wrong, probabilities) < 0.3 < 0.8 < label_quality(truth, probabilities)
    ignored = wrong.copy()
    ignored[8:20, 8:20] = 255
    assert label_quality(ignored, probabilities) == pytest.approx(label_quality(truth, probabilities))
    assert label_quality(np.full((4, 4), 255, np.uint8), certain(np.zeros((4, 4), np.uint8), 2)) == 1.0


def test_corrupted_masks_rank_first_with_their_kinds(clean_model: tuple[Path, Path], tmp_path: Path) -> None:
    clean, model = clean_model
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    for name, change in (("im05", erase_red), ("im08", add_blob), ("im03", blue_to_red)):
        corrupt(data, name, change)
    ranking = tmp_path / "ranking.json"
    result = segkit.audit(data, model=model, json=ranking, device="cpu")
    entries = json.loads(ranking.read_text())
    assert entries == result.to_list() and len(entries) == 12
    assert {entry["image"] for entry in entries[:3]} == {"im05.png", "im08.png", "im03.png"}
    scores = [entry["score"] for entry in entries]
    assert scores == sorted(scores) and all(isinstance(score, float) and 0 <= score <= 1 for score in scores)
    found = {entry["image"]: entry["regions"] for entry in entries[:3]}
    assert [(region["kind"], region["class"]) for region in found["im05.png"]] == [("missing", "red")]
    assert [(region["kind"], region["class"]) for region in found["im08.png"]] == [("extra", "blue")]
    assert found["im08.png"][0]["bbox"] == [20, 50, 32, 60] and found["im08.png"][0]["area"] == 120
    assert [(region["kind"], region["label"], region["predicted"]) for region in found["im03.png"]] == [
        ("wrong_class", "red", "blue")
    ]
    assert set(entries[0]) >= {"image", "score", "path", "mask", "fold", "regions", "outline", "edges"}
    assert 0.5 < result.edge_reliability <= 1  # squares on noise: their outlines lie on the photos' edges
    assert "outlines on the photo's edges in" in result.format()
    outlines = [entry["outline"] for entry in entries if entry["outline"] is not None]
    assert entries[0]["fold"] is None and len(outlines) >= 10 and {fit["class"] for fit in outlines} <= {"red", "blue"}
    with (tmp_path / "ranking.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert [row["image"] for row in rows] == [entry["image"] for entry in entries]
    assert rows[0]["rank"] == "1" and sum(int(row["missing"]) for row in rows) >= 1


def test_an_outline_drawn_beside_its_object_ranks_first(clean_model: tuple[Path, Path], tmp_path: Path) -> None:
    clean, model = clean_model
    data = tmp_path / "data"
    shutil.copytree(clean, data)

    def shift_red(mask: np.ndarray) -> None:
        red = mask == 1
        mask[red] = 0
        mask[np.roll(red, 6, axis=1) & (mask == 0)] = 1  # the red square drawn 6 px to the right

    corrupt(data, "im07", shift_red)
    result = segkit.audit(data, model=model, device="cpu")
    first = result.images[0]
    assert first.image.name == "im07.png" and first.edges is not None and first.edges.class_name == "red"
    assert first.edges.gain > 0.2 and first.edges.shift[0] == pytest.approx(-6, abs=1)
    assert first.to_dict()["edges"]["shift"] == list(first.edges.shift)
    assert "im07.png" in result.format().splitlines()[2] and "outline of red on the image's edges" in result.format()


def test_k_fold_training_finds_an_erased_object(tmp_path: Path) -> None:
    data = shapes(tmp_path / "data", count=8, seed=1)
    corrupt(data, "im05", erase_red)
    out = tmp_path / "audit"
    # each fold: a tiny network, 25 epochs at most, within its share of the budget
    result = segkit.audit(
        data, folds=2, time_budget=40, out=out, top=3, device="cpu", train_options={**TINY, "epochs": 25, "lr": 1e-2}
    )
    first = result.images[0]
    assert first.image.name == "im05.png" and first.fold == 2  # every 2nd image by name: im05 is in fold 2
    assert [(region.kind, region.class_name) for region in first.regions][:1] == [("missing", "red")]
    assert sorted({item.fold for item in result.images}) == [1, 2]
    assert sorted(path.name for path in out.iterdir()) == ["audit.csv", "audit.html", "audit.json", "folds"]
    assert (out / "folds" / "fold_1" / "best.pt").is_file() and (out / "folds" / "fold_2" / "best.pt").is_file()
    page = (out / "audit.html").read_text()
    assert page.count("<figure>") == 3 * 4 and "im05.png" in page and "missing red" in page
    assert "2-fold out-of-sample probabilities" in result.format()


def test_bad_input_is_one_line(clean_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clean, model = clean_model
    (tmp_path / "empty").mkdir()
    assert main(["audit", str(tmp_path / "empty"), "--model", str(model)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"segkit: error: {tmp_path / 'empty'}") and error.count("\n") == 1
    other = tmp_path / "other.pt"
    save_checkpoint(tiny_checkpoint(("background", "cat")), other)
    assert main(["audit", str(clean), "--model", str(other), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"segkit: error: {other}: the model's classes (background, cat) differ from the data's")
    assert error.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["audit", str(clean), "--folds", "1"])
    with pytest.raises(SystemExit):
        main(["audit", str(clean), "--model", str(model), "--folds", "3"])
    with pytest.raises(SegkitError, match="12 labelled images are too few for 7-fold training"):
        segkit.audit(clean, folds=7)
    with pytest.raises(SegkitError, match="choose another --out"):
        segkit.audit(clean, model=model, out=clean / "audit")


@pytest.mark.slow
def test_audit_through_the_cli(clean_model: tuple[Path, Path], tmp_path: Path) -> None:
    clean, model = clean_model
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    corrupt(data, "im07", add_blob)
    ranking, out = tmp_path / "ranking.json", tmp_path / "audit"
    command = [sys.executable, "-m", "segkit", "audit", str(data), "--model", str(model), "--device", "cpu"]
    done = subprocess.run(
        [*command, "--json", str(ranking), "--out", str(out), "--top", "2"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "in-sample scores are optimistic" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("12 masks audited (in-sample probabilities of") and "1 extra" in lines[0]
    assert lines[2].split()[:2] == ["1", "im07.png"] and "extra blue (120 px)" in lines[2]
    assert json.loads(ranking.read_text())[0]["image"] == "im07.png" and (tmp_path / "ranking.csv").is_file()
    assert sorted(path.name for path in out.iterdir()) == ["audit.csv", "audit.html", "audit.json"]
    assert json.loads((out / "audit.json").read_text()) == json.loads(ranking.read_text())
    page = (out / "audit.html").read_text()
    assert page.count("<figure>") == 2 * 4 and "optimistic" in page and 'id="per-image"' in page
