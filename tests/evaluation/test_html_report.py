"""The HTML evaluation report: per-image results, ``segkit evaluate --report``, ``segkit report RUN_DIR``,
and the page in a real headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_checkpoint
from PIL import Image

from segkit.checkpoint import save_checkpoint
from segkit.cli import main
from segkit.data.io import write_mask
from segkit.evaluation.confusion import confusion_matrix
from segkit.evaluation.folders import evaluate_folders
from segkit.evaluation.per_image import ImagePixels, ImageResult, PerImageScores

CLASSES = ("background", "road", "car")


def make_dataset(root: Path, count: int = 6) -> Path:
    """images/ + masks/ + class_names.txt: gradients with a disk (class 1) and a box (class 2), some ignore."""
    rng = np.random.default_rng(0)
    for index in range(count):
        height, width = 36 + 4 * index, 48 + 2 * index
        rows, cols = np.mgrid[0:height, 0:width]
        image = np.stack([cols * 255 // width, rows * 255 // height, np.full_like(rows, 90)], axis=2)
        mask = np.zeros((height, width), np.uint8)
        disk = (rows - height / 2) ** 2 + (cols - width / 3) ** 2 < (min(height, width) / 4) ** 2
        mask[disk] = 1
        mask[2:10, width - 14 : width - 3] = 2
        mask[0, :] = 255
        image[disk] = (250, 240, 30)
        image = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"img{index}.png")
        write_mask(root / "masks" / f"img{index}.png", mask)
    (root / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def checkpoint_file(path: Path, history: bool = True, data: Path | None = None) -> Path:
    checkpoint = tiny_checkpoint(CLASSES, seed=2, zero_head_bias=True)
    if history:
        training = checkpoint.card.training
        training.history = [{"epoch": e, "train_loss": 1 / e, "val_mIoU": 0.2 * e} for e in (1, 2, 3)]
        training.epoch, training.best_epoch, training.best_metric, training.seconds = 3, 3, 0.6, 75.0
        training.metrics = {}
        if data is not None:
            training.config = {"data": str(data), "val_split": 0.5, "lr": 0.001}
    save_checkpoint(checkpoint, path)
    return path


def sources_are_embedded(html: str) -> bool:
    """Every src/href is a data: URI or an in-page anchor: the file needs no network and no other file."""
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    return all(link.startswith(("data:", "#")) for link in links)


def test_per_image_scores_keep_only_the_worst_and_load_only_them() -> None:
    loaded: list[str] = []
    scores = PerImageScores(worst=2)
    truth = np.array([[0, 1], [1, 1]], np.uint8)
    for name, prediction in (
        ("good", truth),
        ("bad", 1 - truth),
        ("half", np.array([[0, 0], [1, 1]], np.uint8)),
        ("good2", truth),
    ):
        matrix = confusion_matrix(prediction, truth, 2, 255)

        def load(name: str = name, prediction: np.ndarray = prediction) -> ImagePixels:
            loaded.append(name)
            return ImagePixels(None, truth, prediction)

        scores(ImageResult(name, matrix, load))
    assert [score.name for score in scores.scores] == ["good", "bad", "half", "good2"]
    assert [score.name for score, _ in scores.worst_images()] == ["bad", "half"]
    assert "good2" not in loaded  # an image better than the kept ones is never read
    assert scores.scores[1].miou == 0.0 and scores.scores[0].miou == 1.0 and scores.scores[2].pixel_accuracy == 0.75


def test_folder_evaluation_gives_per_image_matrices(tmp_path: Path) -> None:
    """Per-image matrices add up to the whole matrix, with binary 0/255 masks read as classes 0/1."""
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        truth = rng.choice([0, 255], (9, 11)).astype(np.uint8)
        write_mask(tmp_path / "true" / f"{name}.png", truth)
        write_mask(tmp_path / "pred" / f"{name}.png", (rng.random((9, 11)) > 0.5).astype(np.uint8))
    results: list[ImageResult] = []
    metrics = evaluate_folders(tmp_path / "pred", tmp_path / "true", on_image=results.append)
    assert [result.name for result in results] == ["a", "b", "c"]
    assert np.array_equal(sum(result.matrix for result in results), metrics["confusion_matrix"])
    pixels = results[0].load()
    assert pixels.image is None and set(np.unique(pixels.truth)) <= {0, 1}
    assert np.array_equal(confusion_matrix(pixels.prediction, pixels.truth, 2, 255), results[0].matrix)


def test_evaluate_folders_report(tmp_path: Path) -> None:
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    for index in range(3):
        write_mask(tmp_path / "true" / f"m{index}.png", truth)
        write_mask(tmp_path / "pred" / f"m{index}.png", np.roll(truth, index, axis=1).clip(0, 2))
    (tmp_path / "classes.txt").write_text("background\nroad\ncar\n")
    report = tmp_path / "out" / "report.html"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred"),
                "--true",
                str(tmp_path / "true"),
                "--classes",
                str(tmp_path / "classes.txt"),
                "--report",
                str(report),
                "--worst",
                "2",
            ]
        )
        == 0
    )
    html = report.read_text(encoding="utf-8")
    assert re.findall(r'<tr class="[a-z]*" data-class="([^"]+)"', html) == ["background", "road", "car"]
    assert 'id="curves"' not in html and 'id="model"' not in html  # no checkpoint: no card, no curves
    assert html.count('<div class="worst">') == 2 and "m0" in html
    assert html.count('<td class="cell') == 9
    assert sources_are_embedded(html)


@pytest.mark.parametrize(
    ("file_name", "text", "colour"),
    [
        ("names.json", '["background", "road", "car"]', None),
        ("names.csv", "name\nbackground\nroad\ncar\n", None),
        (
            "classes.json",
            '{"classes": [{"name": "background", "rgb": [0, 0, 0]}, {"name": "road", "rgb": [110, 193, 228]}, '
            '{"name": "car", "rgb": [254, 221, 58]}]}',
            "#6ec1e4",
        ),
    ],
)
def test_folders_report_reads_every_class_list_form(
    tmp_path: Path, file_name: str, text: str, colour: str | None
) -> None:
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    write_mask(tmp_path / "true" / "m.png", truth)
    write_mask(tmp_path / "pred" / "m.png", truth)
    (tmp_path / file_name).write_text(text)
    report = tmp_path / "report.html"
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--true", str(tmp_path / "true")]
    assert main([*argv, "--classes", str(tmp_path / file_name), "--report", str(report)]) == 0
    html = report.read_text(encoding="utf-8")
    assert re.findall(r'<tr class="[a-z]*" data-class="([^"]+)"', html) == ["background", "road", "car"]
    if colour is not None:  # a colour table's colours are the report's
        assert colour in html.lower()


def evaluate_with_report(tmp_path: Path) -> Path:
    """``segkit evaluate best.pt data/ --report report.html`` on a fresh dataset; the report's path."""
    report = tmp_path / "report.html"
    argv = ["evaluate", str(checkpoint_file(tmp_path / "best.pt")), str(make_dataset(tmp_path / "data"))]
    assert main([*argv, "--device", "cpu", "--report", str(report)]) == 0
    return report


def test_evaluate_checkpoint_report(tmp_path: Path) -> None:
    report = evaluate_with_report(tmp_path)
    html = report.read_text(encoding="utf-8")
    assert 'id="model"' in html and "unet (base_channels=4, depth=2)" in html
    assert 'id="curves"' in html and "best epoch 3" in html
    assert html.count('<tr><td class="name" data-value=') == 6  # one per-image row per image
    assert html.count('<div class="worst">') == 6 and html.count("<figcaption>image</figcaption>") == 6
    assert sources_are_embedded(html)


RACE = {
    "raced": True,
    "skipped": "",
    "winner": 1,
    "slice_seconds": 22.0,
    "loser_seconds": 50.0,
    "loser_share": 0.17,
    "validation_images": ["img0", "img3"],
    "entries": [
        {
            "label": "unet-16, whole images 64x64",
            "rungs": [{"steps": 30, "seconds": 25.0, "score": 0.41}],
            "eliminated": 0,
            "error": None,
            "seconds": 25.0,
        },
        {
            "label": "unet-16, 256px crops at native scale",
            "rungs": [{"steps": 31, "seconds": 24.0, "score": 0.52}, {"steps": 60, "seconds": 48.0, "score": 0.64}],
            "eliminated": None,
            "error": None,
            "seconds": 48.0,
        },
        {
            "label": "unet-8, whole images 64x64",
            "rungs": [],
            "eliminated": 0,
            "error": "the loss became not finite",
            "seconds": 3.0,
        },
    ],
}


def test_report_draws_the_planning_race(tmp_path: Path) -> None:
    from segkit.checkpoint import load_checkpoint
    from segkit.evaluation.html_report import render_report
    from segkit.evaluation.metrics import compute_metrics

    card = load_checkpoint(checkpoint_file(tmp_path / "best.pt")).card
    metrics = compute_metrics(np.array([[5, 1, 0], [0, 4, 0], [0, 0, 2]]), CLASSES, 2)
    assert 'id="race"' not in render_report(metrics, card=card)  # no race in the card: no section
    card.training.plan = {"race": RACE}
    html = render_report(metrics, card=card)
    section = html[html.index('<section id="race">') :]
    assert "The losers took 50 s (17 % of the budget)" in section and "0.5200 → 0.6400" in section
    assert "won: training went on with it" in section and "stopped: the loss became not finite" in section
    assert "stopped after rung 1" in section and section.index("data:image/png") > 0
    card.training.plan = {"race": {"raced": False, "skipped": "a budget under 120s is too short to race"}}
    assert "No race: a budget under 120s is too short to race." in render_report(metrics, card=card)


def test_report_of_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    checkpoint_file(run / "best.pt", data=data)
    assert main(["report", str(run), "--worst", "1", "--device", "cpu"]) == 0
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "held out 0.5" in html and html.count('<tr><td class="name" data-value=') == 3  # the 3 held-out images
    assert html.count('<div class="worst">') == 1
    other = make_dataset(tmp_path / "other")  # other data: every image is scored
    assert main(["report", str(run), "--data", str(other), "--out", str(tmp_path / "all.html"), "--device", "cpu"]) == 0
    assert (tmp_path / "all.html").read_text(encoding="utf-8").count('<tr><td class="name" data-value=') == 6

    # The run's data is gone: the stored validation metrics, said so.
    checkpoint = tiny_checkpoint(CLASSES)
    checkpoint.card.training.config = {"data": str(tmp_path / "gone"), "val_split": 0.2}
    from segkit.evaluation.metrics import compute_metrics

    checkpoint.card.training.metrics = compute_metrics(np.array([[5, 1, 0], [0, 4, 0], [0, 0, 2]]), CLASSES, 2)
    save_checkpoint(checkpoint, run / "best.pt")
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "was not found" in html and 'id="images"' not in html and 'data-class="car"' in html

    assert main(["report", str(tmp_path)]) == 2
    assert "no best.pt or last.pt here" in capsys.readouterr().err


def test_report_of_a_run_on_train_and_valid_scores_valid(tmp_path: Path) -> None:
    """A dataset with train/ and valid/ (Roboflow's names): the run validated on valid/, so the report scores it."""
    data = tmp_path / "data"
    make_dataset(data / "train", count=6)
    make_dataset(data / "valid", count=2)
    (data / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    checkpoint_file(run / "best.pt", data=data)  # its stored config says val_split 0.5: not used beside valid/
    assert main(["report", str(run), "--device", "cpu"]) == 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "(split valid)" in html and "held out" not in html
    assert html.count('<tr><td class="name" data-value=') == 2  # valid/'s two images, none of train/'s six


def test_report_in_chromium(browser, tmp_path: Path) -> None:
    report = evaluate_with_report(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri())
    page.wait_for_load_state("load")

    assert page.eval_on_selector_all("#class-table tbody tr", "rows => rows.map(r => r.dataset.class)") == list(CLASSES)
    # The heat map is drawn: 3 x 3 coloured cells, darker where the row's share is larger.
    cells = page.eval_on_selector_all(
        "#confusion td.cell",
        "cells => cells.map(c => [getComputedStyle(c).backgroundColor, c.getBoundingClientRect().width, c.title])",
    )
    assert len(cells) == 9 and all(width > 20 for _, width, _ in cells)
    assert len({colour for colour, _, _ in cells}) > 1 and all(colour.startswith("rgb(") for colour, _, _ in cells)
    assert all("pixels" in title for _, _, title in cells)
    # Every embedded image decodes.
    sizes = page.eval_on_selector_all("img", "images => images.map(i => [i.complete, i.naturalWidth])")
    assert sizes and all(complete and width > 0 for complete, width in sizes)
    # Sorting the per-image table by name, then by mIoU descending.
    page.click("#per-image th:nth-child(1)")
    names = page.eval_on_selector_all("#per-image tbody td.name", "cells => cells.map(c => c.textContent)")
    assert names == sorted(names)
    page.click("#per-image th:nth-child(2)")
    page.click("#per-image th:nth-child(2)")
    values = page.eval_on_selector_all(
        "#per-image tbody tr td:nth-child(2)", "cells => cells.map(c => c.dataset.value)"
    )
    assert [float(v) for v in values if v] == sorted((float(v) for v in values if v), reverse=True)
    assert all(url.startswith(("file:", "data:")) for url in requests)  # nothing from the network
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()
    assert errors == []
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_report_of_a_run_stopped_before_its_first_validation(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    checkpoint_file(run / "last.pt", data=data)  # no best.pt yet
    assert main(["report", str(run), "--device", "cpu"]) == 0
    assert "last.pt" in (run / "report.html").read_text(encoding="utf-8")
