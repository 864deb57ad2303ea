"""labelme reading and rasterisation: every shape type, labels, errors, labelme's golden export."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_path
from PIL import Image

from segkit.data.classes import read_class_list, with_background_first
from segkit.data.labelme import (
    LINE_WIDTH,
    POINT_SIZE,
    LabelmeAnnotation,
    NotLabelme,
    find_labelme_files,
    labels_in_class_order,
    rasterize,
    read_labelme,
    scan_labels,
)
from segkit.errors import SegkitError

H, W = 30, 40
LABELS = {"_background_": 0, "a": 1, "b": 2}


def make_image(height: int = H, width: int = W) -> np.ndarray:
    """A deterministic RGB gradient, so images can be compared exactly."""
    yy, xx = np.mgrid[:height, :width]
    return np.stack([xx * 5 % 256, yy * 7 % 256, (xx + yy) % 256], axis=2).astype(np.uint8)


def encode(image: np.ndarray, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format)
    return buffer.getvalue()


def shape(label: str, points: list, shape_type: str = "polygon", **extra) -> dict:
    return {"label": label, "points": points, "group_id": None, "shape_type": shape_type, "flags": {}, **extra}


def write_labelme(
    folder: Path,
    name: str,
    shapes: list[dict],
    image: np.ndarray | None = None,
    embed: bool = False,
    image_format: str = "PNG",
    image_path: str | None = None,
) -> Path:
    """Write ``name``.json (and its image file unless ``embed``) as labelme 5 does."""
    image = make_image() if image is None else image
    data = encode(image, image_format)
    suffix = ".png" if image_format == "PNG" else ".jpg"
    folder.mkdir(parents=True, exist_ok=True)
    if not embed:
        (folder / f"{name}{suffix}").write_bytes(data)
    document = {
        "version": "5.7.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path or f"{name}{suffix}",
        "imageData": base64.b64encode(data).decode() if embed else None,
        "imageHeight": image.shape[0],
        "imageWidth": image.shape[1],
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def mask_of(tmp_path: Path, shapes: list[dict], labels: dict[str, int] = LABELS, **kwargs) -> np.ndarray:
    return rasterize(read_labelme(write_labelme(tmp_path, "x", shapes)), labels, **kwargs)


# --- shapes -------------------------------------------------------------------------------


def test_rectangle_fills_both_corners_inclusive_in_any_order(tmp_path):
    expected = np.zeros((H, W), np.uint8)
    expected[3:10, 2:8] = 1
    assert np.array_equal(mask_of(tmp_path, [shape("a", [[2, 3], [7, 9]], "rectangle")]), expected)
    assert np.array_equal(mask_of(tmp_path, [shape("a", [[7, 9], [2, 3]], "rectangle")]), expected)


def test_circle_radius_is_distance_to_second_point(tmp_path):
    mask = mask_of(tmp_path, [shape("a", [[20, 15], [23, 19]], "circle")])  # 3-4-5: radius 5
    yy, xx = np.mgrid[:H, :W]
    distance2 = (xx - 20) ** 2 + (yy - 15) ** 2
    assert mask[distance2 <= 25].all() and not mask[distance2 > 36].any()
    assert np.nonzero(mask[15])[0].tolist() == list(range(15, 26))
    disk = mask[10:21, 15:26]
    assert np.array_equal(disk, disk[::-1]) and np.array_equal(disk, disk[:, ::-1]) and np.array_equal(disk, disk.T)


def test_polygon_includes_its_edges(tmp_path):
    mask = mask_of(tmp_path, [shape("b", [[0, 0], [10, 0], [0, 10]])])
    yy, xx = np.mgrid[:H, :W]
    assert np.array_equal(mask, np.where(xx + yy <= 10, 2, 0).astype(np.uint8))


def test_shape_type_missing_means_polygon(tmp_path):
    polygon = shape("a", [[0, 0], [10, 0], [0, 10]])
    del polygon["shape_type"]
    assert mask_of(tmp_path, [polygon]).sum() == 66


def test_line_has_labelme_width(tmp_path):
    mask = mask_of(tmp_path, [shape("a", [[5, 20], [35, 20]], "line")])
    rows = np.nonzero(mask[:, 20])[0]
    assert len(rows) == LINE_WIDTH and rows[0] <= 20 <= rows[-1] and np.all(np.diff(rows) == 1)
    assert np.nonzero(mask[20])[0].tolist() == list(range(5, 36))


def test_linestrip_draws_every_segment(tmp_path):
    mask = mask_of(tmp_path, [shape("a", [[5, 5], [30, 5], [30, 25]], "linestrip")])
    assert mask[5, 10] == 1 and mask[20, 30] == 1 and mask[20, 10] == 0
    assert len(np.nonzero(mask[15])[0]) == LINE_WIDTH


def test_point_is_a_disk_of_point_size(tmp_path):
    mask = mask_of(tmp_path, [shape("a", [[30, 20]], "point")])
    assert np.nonzero(mask[20])[0].tolist() == list(range(30 - POINT_SIZE, 30 + POINT_SIZE + 1))
    assert np.nonzero(mask[:, 30])[0].tolist() == list(range(20 - POINT_SIZE, 20 + POINT_SIZE + 1))


def test_points_draws_one_disk_per_point(tmp_path):
    mask = mask_of(tmp_path, [shape("a", [[6, 6], [30, 20]], "points")])
    single = mask_of(tmp_path, [shape("a", [[6, 6]], "point")])
    assert mask[6, 6] == 1 and mask[20, 30] == 1 and mask.sum() == 2 * single.sum()


def mask_shape(label: str, top_left: list[float], crop: np.ndarray) -> dict:
    height, width = crop.shape
    bottom_right = [top_left[0] + width - 1, top_left[1] + height - 1]
    png = base64.b64encode(encode(crop.astype(np.uint8))).decode()
    return shape(label, [top_left, bottom_right], "mask", mask=png)


def test_mask_crop_is_placed_at_its_top_left_point(tmp_path):
    crop = np.array([[1, 0, 1, 1], [0, 1, 0, 1], [1, 1, 1, 0]])
    mask = mask_of(tmp_path, [mask_shape("b", [10.7, 5.2], crop)])  # labelme truncates to (10, 5)
    expected = np.zeros((H, W), np.uint8)
    expected[5:8, 10:14] = crop * 2
    assert np.array_equal(mask, expected)


def test_mask_crop_past_the_border_is_clipped(tmp_path, caplog):
    crop = np.ones((6, 6))
    mask = mask_of(tmp_path, [mask_shape("a", [W - 2, H - 3], crop)])
    assert mask.sum() == 2 * 3 and mask[H - 3 :, W - 2 :].all()
    assert "1 point(s) outside" in caplog.text


def test_later_shapes_paint_over_earlier_ones(tmp_path):
    first, second = shape("a", [[0, 0], [20, 20]], "rectangle"), shape("b", [[10, 10], [30, 25]], "rectangle")
    assert mask_of(tmp_path, [first, second])[15, 15] == 2
    assert mask_of(tmp_path, [second, first])[15, 15] == 1


def test_ignore_label_paints_the_ignore_value(tmp_path):
    shapes = [shape("a", [[0, 0], [20, 20]], "rectangle"), shape("__ignore__", [[5, 5], [8, 8]], "rectangle")]
    assert mask_of(tmp_path, shapes)[6, 6] == 255
    assert mask_of(tmp_path, shapes, ignore_index=200)[6, 6] == 200
    assert mask_of(tmp_path, shapes)[2, 2] == 1


def test_points_outside_the_image_warn_once_per_file_with_the_count(tmp_path, caplog):
    shapes = [
        shape("a", [[-5, -5], [10, 10]], "rectangle"),
        shape("b", [[30, 25], [50, 25], [30, 40]]),
        shape("a", [[W, H], [0, 0]], "rectangle"),  # on the border: inside, not counted
    ]
    with caplog.at_level(logging.WARNING, logger="segkit.data.labelme"):
        mask = mask_of(tmp_path, shapes)
    records = [r for r in caplog.records if r.name == "segkit.data.labelme"]
    assert len(records) == 1
    assert "x.json" in records[0].getMessage() and "3 point(s) outside the 40x30 image" in records[0].getMessage()
    assert mask.shape == (H, W) and mask[0, 0] == 1 and mask[H - 1, 30] == 1


def test_no_warning_when_everything_is_inside(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        mask_of(tmp_path, [shape("a", [[0, 0], [W, H]], "rectangle")])
    assert caplog.records == []


# --- shape errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (shape("a", [[0, 0], [5, 5]]), "shape 1 ('a', polygon): needs at least 3 point(s), has 2"),
        (shape("a", [[0, 0]], "rectangle"), "shape 1 ('a', rectangle): needs exactly 2 point(s), has 1"),
        (shape("a", [[0, 0], [1, 1], [2, 2]], "circle"), "needs exactly 2 point(s), has 3"),
        (shape("a", [[0, 0], [1, 1]], "ellipse"), "unsupported shape_type"),
        (shape("a", [[0, 0], [4, 4]], "mask", mask="%%%"), "shape 1 mask is not valid base64"),
        (shape("a", [[0, 0], [4, 4]], "mask", mask=base64.b64encode(b"nope").decode()), "not a readable image"),
        (shape("a", [[0, 0], [4, 4]], "mask"), "no base64 'mask' data"),
    ],
)
def test_malformed_shapes_name_file_and_shape(tmp_path, bad, problem):
    path = write_labelme(tmp_path, "bad", [shape("a", [[0, 0], [5, 5]], "rectangle"), bad])
    with pytest.raises(SegkitError) as error:
        rasterize(read_labelme(path), LABELS)
    assert error.value.path == str(path) and problem in error.value.problem


@pytest.mark.parametrize(
    "points", [[[0, 0], [1]], [[0, "1"], [2, 2], [3, 3]], "0,0", [[0, float("nan")], [1, 1], [2, 2]]]
)
def test_bad_points_are_reported_when_reading(tmp_path, points):
    path = write_labelme(tmp_path, "bad", [shape("a", points)])
    with pytest.raises(SegkitError, match=r"bad\.json: shape 0 \('a'\): 'points' must be"):
        read_labelme(path)


def test_unknown_label_lists_the_known_ones(tmp_path):
    path = write_labelme(tmp_path, "x", [shape("zebra", [[0, 0], [5, 5]], "rectangle")])
    with pytest.raises(SegkitError) as error:
        rasterize(read_labelme(path), LABELS)
    assert str(error.value) == f"{path}: unknown label 'zebra' (known: _background_, a, b)"


def test_class_index_must_fit_uint8(tmp_path):
    path = write_labelme(tmp_path, "x", [shape("a", [[0, 0], [5, 5]], "rectangle")])
    with pytest.raises(SegkitError, match="does not fit in a uint8 mask"):
        rasterize(read_labelme(path), {"_background_": 0, "a": 300})


# --- reading ------------------------------------------------------------------------------


def test_read_from_image_file(tmp_path):
    annotation = read_labelme(write_labelme(tmp_path, "x", []))
    assert isinstance(annotation, LabelmeAnnotation)
    assert annotation.image_path == tmp_path / "x.png" and annotation.image_format == "PNG"
    assert annotation.image.dtype == np.uint8 and np.array_equal(annotation.image, make_image())


def test_embedded_image_data_is_preferred(tmp_path):
    embedded = make_image()[::-1].copy()
    path = write_labelme(tmp_path, "x", [], image=embedded, embed=True, image_path="x.png")
    Image.fromarray(make_image()).save(tmp_path / "x.png")  # a different file under imagePath
    annotation = read_labelme(path)
    assert annotation.image_path is None and np.array_equal(annotation.image, embedded)


@pytest.mark.parametrize(
    "image_path", ["C:\\Users\\someone\\labels\\x.png", "/home/other/machine/x.png", "D:/data/x.png"]
)
def test_foreign_image_paths_fall_back_to_the_file_name(tmp_path, image_path):
    annotation = read_labelme(write_labelme(tmp_path, "x", [], image_path=image_path))
    assert annotation.image_path == tmp_path / "x.png"


def test_relative_image_path_resolves_from_the_json_folder(tmp_path):
    Image.fromarray(make_image()).save(tmp_path / "y.png")
    path = write_labelme(tmp_path / "json", "y", [], image_path="../y.png")
    (tmp_path / "json" / "y.png").unlink()
    assert read_labelme(path).image_path.resolve() == (tmp_path / "y.png").resolve()


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.fromarray(make_image(10, 20)).save(tmp_path / "r.jpg", exif=exif)
    document = {
        "shapes": [shape("a", [[0, 0], [9, 4]], "rectangle")],
        "imagePath": "r.jpg",
        "imageData": None,
        "imageHeight": 20,
        "imageWidth": 10,
    }
    (tmp_path / "r.json").write_text(json.dumps(document))
    annotation = read_labelme(tmp_path / "r.json")
    assert annotation.image.shape == (20, 10, 3)
    assert rasterize(annotation, LABELS)[:5].all()


def test_declared_size_mismatch_only_warns(tmp_path, caplog):
    path = write_labelme(tmp_path, "x", [])
    document = json.loads(path.read_text())
    document["imageHeight"] = 99
    path.write_text(json.dumps(document))
    with caplog.at_level(logging.WARNING):
        annotation = read_labelme(path)
    assert annotation.image.shape == (H, W, 3)
    assert "x.json" in caplog.text and "99" in caplog.text


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "file is empty"),
        (b'{"shapes": [', "invalid JSON"),
        (b'{"shapes": [], "imagePath": "caf\xe9.png"}', "not UTF-8 text"),
        (b"[1, 2]", "not a labelme annotation"),
        (b'{"imagePath": "x.png"}', "not a labelme annotation"),
        (b'{"shapes": [], "imagePath": "gone.png", "imageData": null}', "image 'gone.png' not found"),
        (b'{"shapes": [], "imageData": null}', "no imageData and no imagePath"),
        (b'{"shapes": [], "imageData": "@@not base64@@"}', "imageData is not valid base64"),
        (b'{"shapes": [], "imageData": "aGVsbG8="}', "imageData is not a readable image"),
    ],
)
def test_bad_json_files_name_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(SegkitError) as error:
        read_labelme(path)
    assert error.value.path == str(path) and problem in error.value.problem


def test_missing_json_file(tmp_path):
    with pytest.raises(SegkitError, match="gone.json: file not found"):
        read_labelme(tmp_path / "gone.json")


def test_unreadable_image_file_names_the_image(tmp_path):
    path = write_labelme(tmp_path, "x", [])
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(SegkitError, match=r"x\.png: not a readable image"):
        read_labelme(path)


# --- files and labels ---------------------------------------------------------------------


def test_find_labelme_files_keeps_labelme_and_broken_json_only(tmp_path):
    write_labelme(tmp_path, "b", [])
    write_labelme(tmp_path, "a", [])
    write_labelme(tmp_path / "sub", "c", [])
    (tmp_path / "coco.json").write_text('{"images": [], "annotations": []}')
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "notes.txt").write_text("shapes")
    assert [p.name for p in find_labelme_files(tmp_path)] == ["a.json", "b.json", "broken.json"]


def test_scan_labels_sorted_background_first_ignore_excluded(tmp_path):
    first = write_labelme(
        tmp_path,
        "1",
        [shape("zebra", [[0, 0], [1, 1]], "rectangle"), shape("__ignore__", [[0, 0], [1, 1]], "rectangle")],
    )
    second = write_labelme(
        tmp_path,
        "2",
        [shape("cat", [[0, 0], [1, 1]], "rectangle"), shape("_background_", [[0, 0], [1, 1]], "rectangle")],
    )
    coco = tmp_path / "coco.json"
    coco.write_text('{"images": [], "annotations": [], "info": "shapes"}')
    broken = tmp_path / "broken.json"
    broken.write_text('{"shapes": [')
    problems = []
    kept, labels = scan_labels([first, coco, broken, second], problems)
    assert labels == ["_background_", "cat", "zebra"]
    assert kept == [first, broken, second]  # not labelme: left out; unreadable: kept and reported
    assert [error.path for error in problems] == [str(broken)] and "invalid JSON" in problems[0].problem


def test_labels_keep_the_background_spelling_used():
    assert labels_in_class_order(["background", "a"]) == ["background", "a"]
    assert labels_in_class_order(["a", "Background", "_background_"]) == ["_background_", "Background", "a"]
    assert labels_in_class_order(["a"]) == ["_background_", "a"]


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("", "shape 0: label is empty"),
        ("  ", "shape 0: label is empty"),
        ("dog\nbird", r"shape 0: label 'dog\\nbird' holds a line break"),
        ("a\tb", "holds a line break or control"),
    ],
)
def test_labels_that_no_class_file_could_hold_are_refused(tmp_path, label, problem):
    path = write_labelme(tmp_path, "x", [shape(label, [[0, 0], [1, 1]], "rectangle")])
    with pytest.raises(SegkitError, match=problem) as error:
        read_labelme(path)
    assert error.value.path == str(path)


def test_labels_lose_surrounding_spaces(tmp_path):
    path = write_labelme(tmp_path, "x", [shape(" cat ", [[0, 0], [9, 9]], "rectangle")])
    annotation = read_labelme(path)
    assert annotation.shapes[0]["label"] == "cat"
    assert rasterize(annotation, {"_background_": 0, "cat": 1})[5, 5] == 1


def test_find_labelme_files_reports_names_that_differ_only_in_case(tmp_path):
    write_labelme(tmp_path, "a", [])
    (tmp_path / "a.JSON").write_bytes((tmp_path / "a.json").read_bytes())
    write_labelme(tmp_path, "b", [])
    with pytest.raises(SegkitError, match="same name as a.JSON but for letter case"):
        find_labelme_files(tmp_path)
    problems = []
    assert [p.name for p in find_labelme_files(tmp_path, problems)] == ["a.JSON", "b.json"]
    assert [error.path for error in problems] == [str(tmp_path / "a.json")]


def test_find_labelme_files_does_not_parse_annotations(tmp_path, monkeypatch):
    write_labelme(tmp_path, "a", [])
    (tmp_path / "coco.json").write_text('{"images": []}')
    parsed = []
    import segkit.data.labelme as labelme_module

    real = labelme_module.read_json
    monkeypatch.setattr(labelme_module, "read_json", lambda path, what: parsed.append(path.name) or real(path, what))
    assert [p.name for p in find_labelme_files(tmp_path)] == ["a.json"]
    assert parsed == ["coco.json"]  # only the file that does not mention "shapes" is parsed


def test_utf16_annotation_is_found_and_read(tmp_path):
    path = write_labelme(tmp_path, "x", [shape("a", [[0, 0], [9, 9]], "rectangle")])
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
    assert find_labelme_files(tmp_path) == [path]
    assert read_labelme(path).shapes[0]["label"] == "a"


def test_not_labelme_is_its_own_error(tmp_path):
    path = tmp_path / "coco.json"
    path.write_text('{"images": []}')
    with pytest.raises(NotLabelme, match="not a labelme annotation"):
        read_labelme(path)


def test_deeply_nested_json_is_one_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"shapes": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(SegkitError, match="JSON nested too deeply"):
        read_labelme(path)


def test_mask_shape_far_outside_the_image_is_clipped_away(tmp_path, caplog):
    crop = base64.b64encode(encode(np.full((4, 4, 3), 255, np.uint8))).decode()
    far = shape("a", [[1e30, 1e30], [1e30 + 3, 1e30 + 3]], "mask", mask=crop)
    near = shape("b", [[-2, -2], [1, 1]], "mask", mask=crop)
    with caplog.at_level(logging.WARNING):
        mask = mask_of(tmp_path, [far, near])
    assert mask[:2, :2].tolist() == [[2, 2], [2, 2]] and (mask == 1).sum() == 0 and mask[2:, 2:].max() == 0
    assert "point(s) outside" in caplog.text


# --- real labelme data --------------------------------------------------------------------

GOLDEN = [
    ("semantic_segmentation", "labels.txt", "voc_export/masks"),
    ("video_annotation", "labels.txt", "voc_export/masks"),
    ("instance_segmentation", "labels.txt", "voc_export_class/masks"),
    ("tutorial_apc2016", "label_names.txt", "export/masks"),
]


@pytest.mark.parametrize(("folder", "labels_file", "masks"), GOLDEN)
def test_matches_labelme_own_export(shared_datasets, folder, labels_file, masks):
    root = dataset_path(shared_datasets, "labelme_examples", folder)
    names = with_background_first(read_class_list(str(root / labels_file))).names
    mapping = {name: index for index, name in enumerate(names)}
    files = find_labelme_files(root / "labelme_json")
    assert files
    for path in files:
        mask = rasterize(read_labelme(path), mapping)
        golden = np.asarray(Image.open(root / masks / f"{path.stem}.png"))
        assert mask.shape == golden.shape
        assert (mask == golden).mean() >= 0.9999, path.name


def test_primitives_every_shape_type(shared_datasets):
    path = dataset_path(shared_datasets, "labelme_examples/primitives/primitives.json")
    annotation = read_labelme(path)
    types = {s["shape_type"] for s in annotation.shapes}
    assert types == {"rectangle", "circle", "polygon", "line", "point", "linestrip", "mask"}
    names = labels_in_class_order(s["label"] for s in annotation.shapes)
    mask = rasterize(annotation, {name: index for index, name in enumerate(names)})
    assert sorted(np.unique(mask).tolist()) == list(range(len(names)))
    octagon = next(s for s in annotation.shapes if s["shape_type"] == "mask")
    (x0, y0), (x1, y1) = (int(v) for v in octagon["points"][0]), (int(v) for v in octagon["points"][1])
    crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(octagon["mask"])))) != 0
    assert np.array_equal(mask[y0 : y1 + 1, x0 : x1 + 1] == names.index("octagon"), crop)
