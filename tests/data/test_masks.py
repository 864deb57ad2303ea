"""Mask encodings: detection, decoding, validation errors, previews."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.data.colors import load_color_table
from segkit.data.io import read_mask_file
from segkit.data.masks import (
    decode_mask,
    read_mask,
    scan_masks,
    value_counts,
    write_previews,
)
from segkit.errors import SegkitError
from segkit.visualize import PALETTE

IDS = np.array([[0, 1, 2, 255], [2, 2, 1, 0]], dtype=np.uint8)
COLORS = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 128, 0), 255: (255, 255, 255)}


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return path


def save_palette(path: Path, ids: np.ndarray) -> Path:
    image = Image.fromarray(ids, mode="L")
    image.putpalette([value for index in range(256) for value in ((index * 7) % 256, 3, 90)])
    image.save(path)
    return path


def rgb_of(ids: np.ndarray) -> np.ndarray:
    rgb = np.zeros((*ids.shape, 3), dtype=np.uint8)
    for index, colour in COLORS.items():
        rgb[ids == index] = colour
    return rgb


@pytest.fixture
def json_table(tmp_path: Path) -> Path:
    path = tmp_path / "colors.json"
    entries = [{"name": f"c{i}", "rgb": list(c), "index": i} for i, c in COLORS.items()]
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


@pytest.fixture
def csv_table(tmp_path: Path) -> Path:
    path = tmp_path / "colors.csv"
    rows = [f"c{i},{c[0]},{c[1]},{c[2]},{i}" for i, c in COLORS.items()]
    path.write_text("name,r,g,b,index\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_index_l_masks(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", IDS)
    assert scan_masks([path]).encoding == "index"
    mask = read_mask(path, "index", num_classes=3)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, IDS)


def test_palette_masks_use_indices_not_colours(tmp_path: Path) -> None:
    path = save_palette(tmp_path / "a.png", IDS)
    assert Image.open(path).mode == "P"
    scan = scan_masks([path])
    assert scan.encoding == "palette"
    assert scan.values == [0, 1, 2, 255]
    assert scan.palette[1].tolist() == [7, 3, 90]
    np.testing.assert_array_equal(read_mask(path, "palette", num_classes=3), IDS)


def test_binary_0_255(tmp_path: Path) -> None:
    binary = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    paths = [save(tmp_path / "a.png", binary), save(tmp_path / "b.png", np.zeros((2, 2), np.uint8))]
    assert scan_masks(paths).encoding == "binary-0-255"
    np.testing.assert_array_equal(read_mask(paths[0], "binary-0-255", num_classes=2), binary // 255)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([255, 255], "binary-0-255"), ([0, 0], "index"), ([0, 1], "index"), ([0, 128, 255], "index")],
)
def test_binary_needs_only_0_and_255_with_255_present(tmp_path: Path, values: list[int], expected: str) -> None:
    path = save(tmp_path / "a.png", np.array([values], dtype=np.uint8))
    assert scan_masks([path]).encoding == expected


def test_binary_mask_with_other_values_is_an_error(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", np.array([[0, 255, 7]], dtype=np.uint8))
    with pytest.raises(SegkitError, match=re.escape("values [7] in a 0/255 binary mask")) as error:
        read_mask(path, "binary-0-255")
    assert error.value.path == str(path)


@pytest.mark.parametrize("table_fixture", ["json_table", "csv_table"])
def test_rgb_masks_through_colour_table(tmp_path: Path, table_fixture: str, request: pytest.FixtureRequest) -> None:
    table = load_color_table(request.getfixturevalue(table_fixture))
    path = save(tmp_path / "a.png", rgb_of(IDS))
    assert scan_masks([path], table).encoding == "rgb"
    np.testing.assert_array_equal(read_mask(path, "rgb", color_table=table, num_classes=3), IDS)


def test_rgb_mask_without_table_asks_for_colors(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", rgb_of(IDS))
    with pytest.raises(SegkitError, match="pass --colors FILE") as error:
        scan_masks([path])
    assert error.value.path == str(path)
    with pytest.raises(SegkitError, match="pass --colors FILE"):
        read_mask(path, "index")


def test_gray_rgb_mask_is_an_index_mask(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", np.repeat(IDS[..., None], 3, axis=2))
    assert read_mask_file(path)[1] == "RGB"
    assert scan_masks([path]).encoding == "index"
    np.testing.assert_array_equal(read_mask(path, "index", num_classes=3), IDS)


def test_16_bit_masks(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint16)
    path = save(tmp_path / "a.png", ids)
    assert read_mask_file(path)[1].startswith("I")
    assert scan_masks([path]).encoding == "index"
    np.testing.assert_array_equal(read_mask(path, "index", num_classes=3), ids)
    big = save(tmp_path / "b.png", np.array([[0, 300, 1000]], dtype=np.uint16))
    with pytest.raises(SegkitError, match=re.escape("values [300, 1000] do not fit a uint8 class mask")):
        read_mask(big, "index")
    with pytest.raises(SegkitError, match=re.escape("values [300, 1000] out of range for 3 classes")):
        read_mask(big, "index", num_classes=3)


def test_unknown_colour_names_file_colour_and_count(tmp_path: Path, json_table: Path) -> None:
    rgb = rgb_of(IDS)
    rgb[0, :3] = (1, 2, 3)
    rgb[1, 0] = (9, 9, 9)
    path = save(tmp_path / "bad.png", rgb)
    with pytest.raises(SegkitError) as error:
        read_mask(path, "rgb", color_table=load_color_table(json_table))
    assert error.value.path == str(path)
    expected = "unknown colour (1, 2, 3) at 3 pixels (and 1 other unknown colours); known: c0 (0, 0, 0)"
    assert expected in error.value.problem


def test_out_of_range_values_name_file_and_values(tmp_path: Path) -> None:
    path = save(tmp_path / "m.png", np.array([[0, 1, 7, 9, 255, 2]], dtype=np.uint8))
    with pytest.raises(SegkitError) as error:
        read_mask(path, "index", num_classes=3)
    assert str(error.value) == f"{path}: values [7, 9] out of range for 3 classes (ignore value 255)"
    np.testing.assert_array_equal(read_mask(path, "index", num_classes=10)[0], [0, 1, 7, 9, 255, 2])


def test_custom_ignore_index_is_allowed_beyond_classes(tmp_path: Path) -> None:
    path = save(tmp_path / "m.png", np.array([[0, 1, 100]], dtype=np.uint8))
    assert read_mask(path, "index", num_classes=2, ignore_index=100).tolist() == [[0, 1, 100]]
    message = "values [100] out of range for 2 classes (ignore value 255); if 100 marks unlabelled pixels, give --ignore-index 100"
    with pytest.raises(SegkitError, match=re.escape(message) + "$"):
        read_mask(path, "index", num_classes=2)


def test_rgb_dataset_with_a_grayscale_mask_is_refused(tmp_path: Path, json_table: Path) -> None:
    table = load_color_table(json_table)
    rgb = save(tmp_path / "a.png", rgb_of(IDS))
    gray = save(tmp_path / "b.png", IDS)
    with pytest.raises(SegkitError, match="all masks must use one encoding") as error:
        scan_masks([rgb, gray], table)
    assert error.value.path == str(gray)
    with pytest.raises(SegkitError, match="expected an RGB colour mask"):
        decode_mask(IDS, "L", "rgb", path=gray, color_table=table)


def test_scan_collects_unreadable_masks_and_goes_on(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    good = save(tmp_path / "good.png", IDS)
    scan = scan_masks([empty, junk, good])
    assert scan.encoding == "index"
    assert [error.path for error in scan.errors] == [str(empty), str(junk)]
    assert "0 bytes" in scan.errors[0].problem


def test_unknown_encoding_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown mask encoding"):
        decode_mask(IDS, "L", "yuv", path="x")


def test_value_counts_matches_bincount() -> None:
    mask = np.random.default_rng(0).integers(0, 256, (37, 41), dtype=np.uint8)
    np.testing.assert_array_equal(value_counts(mask), np.bincount(mask.ravel(), minlength=256))
    np.testing.assert_array_equal(value_counts(mask[:, ::2]), np.bincount(mask[:, ::2].ravel(), minlength=256))


def test_write_previews_beside_mask_and_with_overlay(tmp_path: Path) -> None:
    mask = save(tmp_path / "m.png", IDS)
    image = save(tmp_path / "photo.png", np.full((2, 4, 3), 100, np.uint8))
    written = write_previews(mask, out_dir=tmp_path / "out", image=image, alpha=0.5)
    assert written == [tmp_path / "out" / "m_color.png", tmp_path / "out" / "m_overlay.png"]
    colour = np.asarray(Image.open(written[0]))
    np.testing.assert_array_equal(colour, PALETTE[IDS])
    assert colour[0, 3].tolist() == [255, 255, 255] and colour[0, 0].tolist() == [0, 0, 0]
    blended = np.asarray(Image.open(written[1]))
    assert blended[0, 0].tolist() == [100, 100, 100]  # background untouched
    assert blended[0, 1].tolist() == [int(0.5 * 100 + 0.5 * c + 0.5) for c in PALETTE[1]]
    assert write_previews(mask) == [tmp_path / "m_color.png"]


def test_write_previews_finds_image_in_folder_and_checks_size(tmp_path: Path) -> None:
    mask = save(tmp_path / "m.png", IDS)
    images = tmp_path / "images"
    images.mkdir()
    save(images / "m.jpg", np.zeros((2, 4, 3), np.uint8))
    assert write_previews(mask, image=images)[1] == tmp_path / "m_overlay.png"
    save(images / "m.jpg", np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(SegkitError, match="mask is 4x2 but its image is 4x3"):
        write_previews(mask, image=images)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegkitError, match="no image named m"):
        write_previews(mask, image=tmp_path / "empty")


def test_a_palette_mask_drawn_in_its_own_grays_is_a_gray_mask(tmp_path: Path) -> None:
    """GIF and PNG writers often store 0/255 masks as palette images whose palette is the gray ramp."""
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5] = 255
    image = Image.fromarray(mask, mode="L").convert("P")
    image.putpalette([value for gray in range(256) for value in (gray, gray, gray)])
    path = tmp_path / "vessels.png"
    image.save(path)
    assert Image.open(path).mode == "P"
    assert scan_masks([path]).encoding == "binary-0-255"
