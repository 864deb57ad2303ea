"""Predictions as labelme annotations: shapes, the file format labelme writes, and the round trip
prediction -> labelme JSON -> ``segkit convert labelme`` on real masks and through ``segkit predict``."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_path, tiny_checkpoint
from PIL import Image

from segkit.checkpoint import save_checkpoint
from segkit.cli import main
from segkit.data.labelme import read_labelme
from segkit.prediction.labelme_export import LabelmeOptions, label_list, labelme_document, mask_to_shapes, write_labelme


def shape_types(shapes: list[dict]) -> list[tuple[str, str]]:
    return [(shape["label"], shape["shape_type"]) for shape in shapes]


def test_regions_become_polygons_holes_masks_specks_dropped() -> None:
    mask = np.zeros((60, 80), np.uint8)
    mask[5:25, 5:35] = 1  # a rectangle: a 4-point polygon
    mask[30:55, 40:75] = 2  # a ring: a mask shape that keeps the hole
    mask[38:47, 50:65] = 0
    mask[40:45, 55:60] = 1  # an island in the hole
    mask[2:4, 70:72] = 1  # a 4-pixel speck
    shapes = mask_to_shapes(mask, ["background", "road", "car"], options=LabelmeOptions(min_area=5))
    assert shape_types(shapes) == [("car", "mask"), ("road", "polygon"), ("road", "polygon")]  # largest first
    assert sorted(map(tuple, shapes[1]["points"])) == [(5.0, 5.0), (5.0, 24.0), (34.0, 5.0), (34.0, 24.0)]
    ring = shapes[0]
    assert ring["points"] == [[40.0, 30.0], [74.0, 54.0]]
    crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(ring["mask"]))))
    assert crop.shape == (25, 35) and np.array_equal(crop, mask[30:55, 40:75] == 2)


def test_file_format_is_labelmes(tmp_path: Path, shared_datasets: Path) -> None:
    """Same fields as labelme 5's own files; segkit's labelme reader takes it, image embedded or by path."""
    example = json.loads(
        (dataset_path(shared_datasets, "labelme_examples", "primitives") / "primitives.json").read_text()
    )
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "photo.png")
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 5:30] = 1
    for embed in (False, True):
        document = labelme_document(
            mask,
            ["background", "road"],
            tmp_path / "images" / "photo.png",
            tmp_path / "labels",
            image=image,
            options=LabelmeOptions(image_data=embed),
        )
        assert set(document) == set(example)
        assert set(document["shapes"][0]) == set(example["shapes"][0])
        assert document["imagePath"] == "../images/photo.png" and (document["imageData"] is not None) == embed
        write_labelme(tmp_path / "labels" / "photo.json", document)
        annotation = read_labelme(tmp_path / "labels" / "photo.json")
        assert np.array_equal(annotation.image, image)
    assert label_list(["background", "road"]) == "__ignore__\nbackground\nroad\n"


@pytest.mark.parametrize(("dataset", "count"), [("dubai_aerial", 4), ("crackforest", 4)])
def test_round_trip_through_convert_on_real_masks(
    shared_datasets: Path, tmp_path: Path, dataset: str, count: int
) -> None:
    """Real masks as the 'prediction' -> labelme JSON -> segkit convert labelme: >= 99 % of the pixels back."""
    root = dataset_path(shared_datasets, dataset)
    names = sorted(path.stem for path in (root / "masks").glob("*.png"))[::9][:count]
    if dataset == "dubai_aerial":  # 6 classes, 255 unlabelled: the unlabelled pixels become the background
        classes = [
            "background",
            *(entry["name"] for entry in json.loads((root / "classes.json").read_text())["classes"]),
        ]
    else:  # cracks: thin regions 1-3 pixels wide
        classes = ["background", "crack"]
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    expected = {}
    for name in names:
        mask = np.asarray(Image.open(root / "masks" / f"{name}.png")).astype(np.int32)
        if dataset == "dubai_aerial":
            mask = np.where(mask == 255, 0, mask + 1)
        expected[name] = mask.astype(np.uint8)
        image = next(path for path in (root / "images").iterdir() if path.stem == name)
        write_labelme(annotations / f"{name}.json", labelme_document(expected[name], classes, image, annotations))
    (annotations / "labels.txt").write_text(label_list(classes))
    out = tmp_path / "converted"
    assert (
        main(["convert", "labelme", str(annotations), str(out), "--labels", str(annotations / "labels.txt"), "--noviz"])
        == 0
    )
    for name, mask in expected.items():
        back = np.asarray(Image.open(out / "masks" / f"{name}.png"))
        agreement = float((back == mask).mean())
        assert agreement >= 0.99, f"{name}: {agreement:.4%}"
        foreground = mask > 0
        assert float((back[foreground] == mask[foreground]).mean()) >= 0.98  # the classes, not just background


def test_predict_labelme_then_convert(tmp_path: Path) -> None:
    """segkit predict --format labelme writes JSON beside the images that converts back to the PNG predictions."""
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(tiny_checkpoint(("background", "cat", "dog"), seed=2, zero_head_bias=True), checkpoint)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(4)
    for index, (height, width) in enumerate([(48, 64), (70, 50)]):
        rows, cols = np.mgrid[0:height, 0:width]
        image = np.stack([cols * 4, rows * 3, 255 - cols * 2], axis=2) + rng.integers(0, 30, (height, width, 3))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(photos / f"p{index}.jpg")
    base = ["predict", str(checkpoint), str(photos), "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "png")]) == 0
    assert main([*base, "--out", str(photos), "--format", "labelme", "--image-data", "--min-area", "0", "--color"]) == 0
    written = sorted(path.name for path in photos.iterdir())
    assert written == [
        "labels.txt",
        "legend.png",
        "p0.jpg",
        "p0.json",
        "p0_color.png",
        "p1.jpg",
        "p1.json",
        "p1_color.png",
    ]
    document = json.loads((photos / "p0.json").read_text())
    assert document["imagePath"] == "p0.jpg" and document["imageData"] and document["imageWidth"] == 64
    assert {shape["label"] for shape in document["shapes"]} <= {"cat", "dog"}

    out = tmp_path / "converted"
    assert main(["convert", "labelme", str(photos), str(out), "--labels", str(photos / "labels.txt"), "--noviz"]) == 0
    for name in ("p0", "p1"):
        predicted = np.asarray(Image.open(tmp_path / "png" / f"{name}.png"))
        assert float((np.asarray(Image.open(out / "masks" / f"{name}.png")) == predicted).mean()) >= 0.99

    legend = np.asarray(Image.open(photos / "legend.png"))
    assert legend.shape[0] > 10 and legend.shape[1] > 100


def test_labelme_options_need_the_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "x.pt"), str(tmp_path), "--out", str(tmp_path / "o"), "--image-data"])
    assert "apply with --format labelme" in capsys.readouterr().err
