"""Class lists: one reader for every command, where the names came from, the background rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import dataset_path

from segkit.data.classes import (
    ClassList,
    background_index,
    clean_class_names,
    default_class_list,
    read_class_file,
    read_class_list,
    with_background_first,
)
from segkit.errors import SegkitError
from segkit.visualize import PALETTE

NAMES = ["road", "car", "tree"]
TABLE = [{"name": name, "rgb": [index * 40, 0, 0]} for index, name in enumerate(NAMES)]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The same three classes in every file format a user may have."""
    contents = {
        "names.txt": "__ignore__\nroad\n\ncar \ntree\n",
        "names_crlf_bom.txt": "\ufeffroad\r\ncar\r\ntree\r\n",
        "list.json": json.dumps(NAMES),
        "object.json": json.dumps({"classes": NAMES}),
        "table.json": json.dumps({"classes": TABLE + [{"name": "void", "rgb": [9, 9, 9], "index": 255}]}),
        "table_by_name.json": json.dumps({name: [index, 1, 2] for index, name in enumerate(NAMES)}),
        "column.csv": "name\nroad\ncar\ntree\n",
        "table.csv": "name,r,g,b\nroad,0,0,0\ncar,40,0,0\ntree,80,0,0\n",
    }
    paths = {}
    for name, text in contents.items():
        paths[name] = tmp_path / name
        paths[name].write_text(text, encoding="utf-8")
    return paths


@pytest.mark.parametrize(
    "name",
    ["names.txt", "names_crlf_bom.txt", "list.json", "object.json", "table.json", "table_by_name.json",
     "column.csv", "table.csv"],
)  # fmt: skip
def test_every_format_gives_the_same_names(files: dict[str, Path], name: str) -> None:
    for spec in (files[name], str(files[name])):
        assert read_class_list(spec).names == NAMES
    read = read_class_file(files[name])
    assert read.names == NAMES and read.path == files[name]
    is_table = "table" in name
    assert read.origin == (f"{name} colour table" if is_table else name)
    assert (read.color_table is not None) == is_table
    assert read_class_list(files[name]).origin == f"--classes {read.origin}"


@pytest.mark.parametrize("spec", [NAMES, tuple(NAMES), "road,car,tree", " road , car,,tree "])
def test_lists_and_comma_lists(spec: object) -> None:
    assert read_class_list(spec) == ClassList(NAMES, "--classes")


def test_one_name_is_one_class_everywhere() -> None:
    """``--classes road`` is ``["road"]`` for every command; only labelme adds a background for unlabelled pixels."""
    assert read_class_list("road").names == ["road"]
    assert with_background_first(read_class_list("road")).names == ["_background_", "road"]


def test_colour_table_entry_with_the_ignore_value_is_no_class(files: dict[str, Path]) -> None:
    assert read_class_list(files["table.json"], ignore_index=255).names == NAMES
    with pytest.raises(SegkitError, match="without gaps"):  # ignoring index 0 leaves 1, 2, 255
        read_class_list(files["table.json"], ignore_index=0)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("a\nb\na\n", "class names repeated: a"),
        ("\n\n__ignore__\n", "no class names"),
        ("a\nb\tc\n", r"class name 2 'b\\tc' holds a line break or control character"),
    ],
)
def test_bad_text_lists_name_the_file(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "names.txt"
    path.write_text(content)
    with pytest.raises(SegkitError, match=problem) as error:
        read_class_list(path)
    assert error.value.path == str(path)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("deep.json", '{"classes": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
        ("empty.json", "", "file is empty"),
        ("blank.json", '["a", ""]', "class name 2 is empty"),
        ("number.json", '{"classes": 5}', "'classes' must be a list"),
        ("mixed.json", '["a", 5]', "a list of class names holds 5"),
        ("nothing.json", '{"classes": []}', "no class names"),
        ("infinite.json", '[{"name": "a", "rgb": [Infinity, 0, 0]}]', "cannot read colour"),
        ("latin1.txt", b"caf\xe9\nbar\n", "class list is not UTF-8 text"),
        ("cells.csv", "a,1,2\n", "expected name,r,g,b"),
    ],
)
def test_bad_files_are_one_error_naming_the_file(tmp_path: Path, name: str, content: str | bytes, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SegkitError, match=problem) as error:
        read_class_list(path)
    assert error.value.path == str(path)


def test_missing_file_and_single_names() -> None:
    with pytest.raises(SegkitError, match="class list file not found"):
        read_class_list("missing/names.txt")
    with pytest.raises(SegkitError, match="class list file not found"):
        read_class_list("names.txt")
    with pytest.raises(SegkitError, match="class name 1 is empty"):
        read_class_list("")


def test_clean_names_skips_blank_only_when_asked() -> None:
    assert clean_class_names(["a", " ", "b"], "x", skip_blank=True) == ["a", "b"]
    with pytest.raises(SegkitError, match="class name 2 is empty"):
        clean_class_names(["a", " ", "b"], "x")


@pytest.mark.parametrize(
    ("names", "expected"),
    [(["b", "a"], ["_background_", "b", "a"]), (["background", "x"], ["background", "x"]),
     (["BG", "x"], ["BG", "x"]), (["__ignore__", "x"], ["_background_", "x"])],
)  # fmt: skip
def test_labelme_lists_start_with_a_background(names: list[str], expected: list[str]) -> None:
    assert with_background_first(read_class_list(names)).names == expected


def test_background_must_come_first_in_labelme_lists(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("a\n_background_\n")
    with pytest.raises(SegkitError, match="'_background_' must be the first class") as error:
        with_background_first(read_class_list(path))
    assert error.value.path == str(path)
    with pytest.raises(SegkitError, match="--classes: 'background' must be the first class"):
        with_background_first(read_class_list("a,background"))


def test_background_is_a_name_never_an_index() -> None:
    assert background_index(["Building", "Land", "Road"]) is None
    assert background_index(["sky", " Background "]) == 1


def test_default_class_lists() -> None:
    assert default_class_list("palette", [0, 3, 255], 255, PALETTE).origin == "VOC names"
    assert default_class_list("palette", [0, 30], 255, PALETTE).names[-1] == "class_30"  # too high for VOC
    assert default_class_list("binary-0-255", [0, 255], 255) == ClassList(["background", "foreground"], "0/255 masks")
    assert default_class_list("index", [0, 2, 255], 255) == ClassList(
        ["background", "class_1", "class_2"], "values found"
    )
    assert default_class_list("index", [0], 255).names == ["background", "class_1"]
    other = PALETTE.copy()
    other[1] = (1, 2, 3)
    assert default_class_list("palette", [0, 3], 255, other).origin == "values found"


def test_real_labelme_labels_file(shared_datasets: Path) -> None:
    labels = read_class_list(dataset_path(shared_datasets, "labelme_examples/semantic_segmentation/labels.txt"))
    assert len(labels.names) == 21 and labels.names[0] == "_background_" and labels.names[-1] == "tv/monitor"
    assert "__ignore__" not in labels.names and "potted plant" in labels.names


def test_real_colour_table(shared_datasets: Path) -> None:
    dubai = read_class_list(dataset_path(shared_datasets, "dubai_aerial", "classes.json"))
    assert dubai.names[0] == "Building" and len(dubai.names) == 6 and dubai.color_table is not None
