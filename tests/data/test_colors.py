"""Colour tables from JSON and CSV files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from segkit.data.colors import UNKNOWN_COLOR, ColorTable, load_color_table, pack_rgb
from segkit.errors import SegkitError


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_json_list_with_rgb_hex_and_index(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "colors.json",
        [
            {"name": "sky", "rgb": [0, 0, 255], "index": 1},
            {"name": "ground", "color": "#00FF00", "index": 0},
            {"name": "void", "colour": [0, 0, 0], "index": 255},
        ],
    )
    table = load_color_table(path)
    assert table.names == ["sky", "ground", "void"]
    assert table.colors.dtype == np.uint8
    assert table.colors.tolist() == [[0, 0, 255], [0, 255, 0], [0, 0, 0]]
    assert table.indices == [1, 0, 255]
    assert table.class_names(255) == ["ground", "sky"]
    assert table.source == path


def test_json_classes_object_like_dubai(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "classes.json",
        {
            "classes": [
                {"index": 0, "name": "Building", "rgb": [60, 16, 152], "hex": "#3C1098"},
                {"index": 1, "name": "Road", "rgb": [110, 193, 228]},
                {"index": 255, "name": "unmapped", "rgb": [0, 0, 0]},
            ]
        },
    )
    table = load_color_table(path)
    assert table.class_names() == ["Building", "Road"]
    assert table.indices == [0, 1, 255]


def test_json_name_to_colour_object_uses_positions(tmp_path: Path) -> None:
    table = load_color_table(write_json(tmp_path / "c.json", {"bg": [0, 0, 0], "cat": "#ff0000", "dog": [0, 9, 0]}))
    assert table.names == ["bg", "cat", "dog"]
    assert table.indices == [0, 1, 2]
    assert table.colors[1].tolist() == [255, 0, 0]


@pytest.mark.parametrize("header", ["name,r,g,b,index\n", ""])
def test_csv_with_and_without_header(tmp_path: Path, header: str) -> None:
    path = tmp_path / "colors.csv"
    path.write_text(header + "background,0,0,0,0\nroad, 128, 64, 128, 1\nvoid,255,255,255,255\n", encoding="utf-8")
    table = load_color_table(path)
    assert table.names == ["background", "road", "void"]
    assert table.colors.tolist() == [[0, 0, 0], [128, 64, 128], [255, 255, 255]]
    assert table.class_names() == ["background", "road"]


def test_csv_without_index_column_uses_row_order(tmp_path: Path) -> None:
    path = tmp_path / "colors.csv"
    path.write_text("a,1,2,3\nb,4,5,6\n", encoding="utf-8")
    assert load_color_table(path).indices == [0, 1]


def test_class_names_keeps_first_name_of_a_shared_index(tmp_path: Path) -> None:
    table = load_color_table(
        write_json(
            tmp_path / "c.json",
            [
                {"name": "bg", "rgb": [0, 0, 0], "index": 0},
                {"name": "bg2", "rgb": [1, 1, 1], "index": 0},
                {"name": "fg", "rgb": [9, 9, 9], "index": 1},
            ],
        )
    )
    assert table.class_names() == ["bg", "fg"]


def test_lookup_table_maps_packed_colours() -> None:
    table = ColorTable(["a", "b"], np.array([[1, 2, 3], [200, 100, 50]], dtype=np.uint8), [4, 255])
    lookup = table.lookup_table()
    assert lookup[pack_rgb(np.array([1, 2, 3], dtype=np.uint8))] == 4
    assert lookup[pack_rgb(np.array([200, 100, 50], dtype=np.uint8))] == 255
    assert lookup[pack_rgb(np.array([0, 0, 0], dtype=np.uint8))] == UNKNOWN_COLOR
    assert table.lookup_table() is lookup  # built once


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.json", "{not json", "invalid JSON"),
        ("c.json", json.dumps([{"name": "a"}]), "has no 'rgb' or 'color'"),
        ("c.json", json.dumps([{"rgb": [0, 0, 0]}]), "needs a 'name'"),
        ("c.json", json.dumps([{"name": "a", "rgb": [0, 0, 300]}]), "not three values in 0..255"),
        ("c.json", json.dumps([{"name": "a", "rgb": "#zzzzzz"}]), "cannot read colour"),
        ("c.json", json.dumps({"a": [1, 2, 3], "b": [1, 2, 3]}), "used by both 'a' and 'b'"),
        ("c.json", json.dumps([{"name": "a", "rgb": [0, 0, 0], "index": 300}]), "outside 0..255"),
        ("c.json", json.dumps([]), "empty"),
        ("c.json", json.dumps(3), "expected a list"),
        ("c.csv", "a,1,2\n", "expected name,r,g,b[,index]"),
        ("c.csv", "a,1,2,3,x\n", "not an integer"),
        ("c.yaml", "a: 1", ".json or .csv"),
    ],
)
def test_bad_tables_name_the_file(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SegkitError, match=re.escape(message)) as error:
        load_color_table(path)
    assert error.value.path == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SegkitError, match="not found") as error:
        load_color_table(tmp_path / "nope.json")
    assert error.value.path == str(tmp_path / "nope.json")


def test_gap_in_class_indices_is_an_error(tmp_path: Path) -> None:
    entries = [{"name": "a", "rgb": [0, 0, 0], "index": 0}, {"name": "b", "rgb": [1, 1, 1], "index": 2}]
    path = write_json(tmp_path / "c.json", entries)
    with pytest.raises(SegkitError, match=r"missing \[1\]") as error:
        load_color_table(path).class_names()
    assert error.value.path == str(path)
