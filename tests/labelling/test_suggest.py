"""segkit suggest: uncertainty weighted toward weak classes, diverse picks, pre-labels that convert back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import tiny_checkpoint
from PIL import Image

import segkit
from segkit.checkpoint import save_checkpoint
from segkit.cli import main
from segkit.errors import SegkitError
from segkit.labelling.suggest import (
    _Scored,
    class_weights,
    near_outlines,
    outline_reach,
    pick_diverse,
    score_probabilities,
    typicality,
)
from segkit.prediction.predictor import Predictor


def uniform(classes: int = 3, size: int = 8) -> np.ndarray:
    return np.full((classes, size, size), 1.0 / classes, np.float32)


def certain(classes: int = 3, size: int = 8, label: int = 0) -> np.ndarray:
    probabilities = np.zeros((classes, size, size), np.float32)
    probabilities[label] = 1.0
    return probabilities


def test_entropy_weighted_toward_the_weak_classes() -> None:
    card = SimpleNamespace(
        classes=["background", "road", "pole"],
        training=SimpleNamespace(
            metrics={"per_class": {"background": {"iou": 0.9}, "road": {"iou": 0.8}, "pole": {"iou": 0.1}}}
        ),
    )
    weights = class_weights(card)
    assert weights.tolist() == pytest.approx([0.6, 0.7, 1.4])
    sure, unsure = score_probabilities(certain(), weights, 1), score_probabilities(uniform(), weights, 1)
    assert sure[0] == pytest.approx(0.0, abs=1e-6) and unsure[1] == pytest.approx(1.0, abs=1e-6)
    doubt_on_pole = uniform() * 0.5
    doubt_on_pole[2] += 0.5  # argmax pole everywhere, half sure
    doubt_on_road = uniform() * 0.5
    doubt_on_road[1] += 0.5
    pole, road = score_probabilities(doubt_on_pole, weights, 1), score_probabilities(doubt_on_road, weights, 1)
    assert pole[1] == pytest.approx(road[1]) and pole[0] == pytest.approx(2 * road[0])  # same doubt, weak class
    assert pole[4] == 2 and road[4] == 1
    unknown = class_weights(SimpleNamespace(classes=["a", "b"], training=SimpleNamespace(metrics={})))
    assert unknown.tolist() == [1.0, 1.0]


def test_doubt_along_the_outlines_does_not_count() -> None:
    """Two images with the same total entropy: along a confident square's outline it scores nothing, inside a
    region it scores in full."""
    weights = np.ones(2)
    square = np.zeros((2, 40, 40), np.float32)
    square[0], square[1, 10:30, 10:30], square[0, 10:30, 10:30] = 1.0, 1.0, 0.0
    on_edge, inside = square.copy(), square.copy()
    ring = near_outlines(square.argmax(axis=0), 2)
    on_edge[:, ring] = 0.6 * square[:, ring] + 0.2  # unsure, the same class predicted
    spots = np.flatnonzero(~ring.ravel())[:: max(1, int((~ring).sum() // ring.sum()))][: int(ring.sum())]
    flat = inside.reshape(2, -1)
    flat[:, spots] = 0.6 * flat[:, spots] + 0.2
    edge_score, edge_entropy = score_probabilities(on_edge, weights, reach=2)[:2]
    inside_score, inside_entropy = score_probabilities(inside, weights, reach=2)[:2]
    assert edge_entropy == pytest.approx(inside_entropy, rel=0.05) and edge_entropy > 0.1
    assert edge_score == pytest.approx(0.0, abs=1e-6) and inside_score > 0.5 * inside_entropy
    assert ring[20, 8] and ring[20, 11] and not ring[20, 7] and not ring[20, 12] and not ring[20, 20]


def test_the_outline_band_is_two_network_pixels_in_the_image() -> None:
    letterbox = SimpleNamespace(img_size=(256, 256), resize="letterbox", scale=1.0)
    native_crops = SimpleNamespace(img_size=(256, 256), resize="crop", scale=1.0)
    assert outline_reach(letterbox, 1024, 768) == 8 and outline_reach(letterbox, 200, 100) == 2
    assert outline_reach(native_crops, 1024, 768) == 2


def test_a_duplicate_is_not_picked_twice() -> None:
    def item(name: str, score: float, layout: list[float]) -> _Scored:
        vector = np.asarray(layout, dtype=np.float64)
        return _Scored(Path(name), score, score, vector / np.linalg.norm(vector), np.ones(2) / 2, "a")

    scored = [item("a", 0.9, [1, 0]), item("a_copy", 0.9, [1, 0]), item("b", 0.5, [0, 1]), item("c", 0.2, [1, 1])]
    picks = [scored[index].image.name for index, _ in pick_diverse(scored, 3)]
    assert picks[:2] in (["a", "b"], ["a_copy", "b"]) and not {"a", "a_copy"} <= set(picks)
    assert [index for index, _ in pick_diverse(scored, 10)] and len(pick_diverse(scored, 10)) <= 4


def test_typicality_is_the_density_among_the_layouts() -> None:
    crowd = np.array([[1.0, 0.0], [0.99, 0.14], [0.97, 0.24], [0.98, 0.2]])
    layouts = np.vstack([crowd, [[0.0, 1.0]]])  # the last one is an outlier
    typical = typicality(layouts / np.linalg.norm(layouts, axis=1, keepdims=True))
    assert typical.max() == pytest.approx(1.0) and typical[4] < 0.5 and typical[4] < typical[:4].min() - 0.3
    assert typicality(np.ones((3, 2))).tolist() == [1.0, 1.0, 1.0]  # all alike: all typical


def photos(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for index in range(4):
        height, width = 40 + 6 * index, 56
        rows, cols = np.mgrid[0:height, 0:width]
        image = np.stack([cols * 4, rows * (3 + index), 255 - cols * 2], axis=2) + rng.integers(
            0, 40, (height, width, 3)
        )
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"p{index}.png")
    shutil.copyfile(folder / "p1.png", folder / "p1_again.png")
    return folder


def test_suggest_through_the_cli_with_pre_labels_that_convert_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(tiny_checkpoint(("background", "cat", "dog"), seed=2, zero_head_bias=True), checkpoint)
    unlabeled = photos(tmp_path / "unlabeled")
    out, ranking = tmp_path / "to_label", tmp_path / "ranking.json"
    argv = ["suggest", str(checkpoint), str(unlabeled), "--count", "3", "--device", "cpu"]
    assert main([*argv, "--out", str(out), "--json", str(ranking)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("3 of 5 images to label next, best first:")
    picks = json.loads(ranking.read_text())
    assert [set(pick) >= {"image", "score", "uncertainty", "typicality", "reason"} for pick in picks] == [True] * 3
    assert all(0 < pick["typicality"] <= 1 for pick in picks)
    names = [Path(pick["image"]).name for pick in picks]
    assert not {"p1.png", "p1_again.png"} <= set(names)  # the copy of a picked image is not picked too
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [
            *names,
            *(Path(name).stem + ".json" for name in names),
            "labels.txt",
            "sheet.jpg",
            "suggestions.csv",
            "suggestions.json",
        ]
    )
    assert json.loads((out / "suggestions.json").read_text()) == picks
    converted = tmp_path / "converted"
    assert main(["convert", "labelme", str(out), str(converted), "--noviz"]) == 0  # labels.txt keeps the model's order
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    for name in names:
        predicted = predictor.predict(unlabeled / name)
        back = np.asarray(Image.open(converted / "masks" / f"{Path(name).stem}.png"))
        assert float((back == predicted).mean()) >= 0.99
    assert segkit.suggest(checkpoint, unlabeled, count=1, device="cpu").picks[0].image.name == names[0]


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(tiny_checkpoint(seed=1), checkpoint)
    (tmp_path / "empty").mkdir()
    assert main(["suggest", str(checkpoint), str(tmp_path / "empty")]) == 2
    assert "folder holds no image files" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"")
    assert main(["suggest", str(checkpoint), str(tmp_path / "junk")]) == 2
    assert "no readable image to rank" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["suggest", str(checkpoint), str(tmp_path / "junk"), "--count", "0"])
    with pytest.raises(SegkitError, match="choose another --json"):
        segkit.suggest(checkpoint, tmp_path / "junk", json=tmp_path / "junk" / "a.png")
