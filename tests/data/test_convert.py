"""``convert_labelme`` and ``segkit convert labelme``: layout, golden masks, safety, CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_path
from PIL import Image

import segkit.cli
from segkit.data.classes import read_class_list
from segkit.data.convert import ConvertResult, convert_labelme
from segkit.errors import SegkitError
from segkit.visualize import PALETTE

from .test_labelme import make_image, shape, write_labelme

RECT_A = shape("a", [[0, 0], [9, 9]], "rectangle")
RECT_B = shape("b", [[20, 10], [29, 19]], "rectangle")


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    """Two labelme files, one with a non-ASCII name with a space, one with an embedded JPEG."""
    folder = tmp_path / "src"
    write_labelme(folder, "café 1", [RECT_A, RECT_B, shape("__ignore__", [[25, 15], [26, 16]], "rectangle")])
    write_labelme(folder, "plain", [RECT_B], embed=True, image_format="JPEG")
    return folder


@pytest.fixture(autouse=True)
def only_convert_command(monkeypatch):
    """Build the CLI with this command only, so these tests do not depend on other sub-commands."""
    monkeypatch.setattr(segkit.cli, "COMMANDS", {"convert": "convert"})


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".segkit-")]


def test_writes_images_masks_class_names_and_visualization(src, tmp_path):
    out = tmp_path / "out"
    result = convert_labelme(src, out)
    assert isinstance(result, ConvertResult)
    assert result.out == out and result.num_images == 2 and result.class_names == ["_background_", "a", "b"]
    assert (out / "class_names.txt").read_text(encoding="utf-8") == "_background_\na\nb\n"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["café 1.png", "plain.jpg"]
    assert sorted(p.name for p in (out / "visualization").iterdir()) == ["café 1.jpg", "plain.jpg"]
    assert np.array_equal(np.asarray(Image.open(out / "images" / "café 1.png")), make_image())

    saved = Image.open(out / "masks" / "café 1.png")
    assert saved.mode == "P" and np.array_equal(np.asarray(saved.getpalette(), np.uint8).reshape(-1, 3), PALETTE)
    mask = np.asarray(saved)
    assert mask[5, 5] == 1 and mask[12, 22] == 2 and mask[15, 25] == 255 and mask[25, 35] == 0
    assert np.asarray(Image.open(out / "masks" / "plain.png"))[12, 22] == 2
    assert leftovers(tmp_path) == [] and oct(out.stat().st_mode & 0o777) != oct(0o700)


def test_embedded_jpeg_is_saved_as_jpeg_of_the_decoded_pixels(src, tmp_path):
    convert_labelme(src, tmp_path / "out")
    image = np.asarray(Image.open(tmp_path / "out" / "images" / "plain.jpg"), dtype=np.int16)
    assert image.shape == make_image().shape and np.abs(image - make_image()).mean() < 8


def test_noviz_and_given_labels(src, tmp_path):
    result = convert_labelme(src, tmp_path / "out", classes=["b", "a", "extra"], noviz=True)
    assert result.class_names == ["_background_", "b", "a", "extra"]
    assert not (tmp_path / "out" / "visualization").exists()
    assert np.asarray(Image.open(tmp_path / "out" / "masks" / "café 1.png"))[5, 5] == 2


@pytest.mark.skipif(sys.getfilesystemencoding() != "utf-8", reason="needs a POSIX byte file system")
def test_non_utf8_file_names(tmp_path):
    folder = tmp_path / "src"
    name = os.fsdecode(b"caf\xe9 latin1")  # not valid UTF-8: a surrogate-escaped name
    try:  # the JSON text itself must be UTF-8, so the image is embedded
        write_labelme(folder, name, [RECT_A], embed=True, image_path="photo.png")
    except OSError:
        pytest.skip("file system refuses non-UTF-8 names")
    convert_labelme(folder, tmp_path / "out")
    assert os.fsencode((tmp_path / "out" / "masks" / f"{name}.png").name) == b"caf\xe9 latin1.png"
    assert (tmp_path / "out" / "masks" / f"{name}.png").is_file()


def test_warnings_are_collected(tmp_path):
    write_labelme(tmp_path / "src", "x", [shape("a", [[-3, -3], [5, 5]], "rectangle")])
    result = convert_labelme(tmp_path / "src", tmp_path / "out")
    assert len(result.warnings) == 1 and "1 point(s) outside" in result.warnings[0]


# --- safety -------------------------------------------------------------------------------


def test_non_empty_out_is_refused_and_untouched(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(SegkitError) as error:
        convert_labelme(src, out)
    assert str(error.value) == f"{out}: exists and is not empty; use --overwrite"
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    assert leftovers(tmp_path) == []


def test_empty_out_is_used(src, tmp_path):
    (tmp_path / "out").mkdir()
    assert convert_labelme(src, tmp_path / "out").num_images == 2


def test_overwrite_replaces_the_old_folder(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    convert_labelme(src, out, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "class_names.txt").is_file()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_failure_midway_leaves_nothing_and_keeps_the_old_folder(src, tmp_path, overwrite):
    write_labelme(src, "zz_bad", [shape("a", [[0, 0], [5, 5]])])  # a polygon with 2 points, converted last
    out = tmp_path / "out"
    if overwrite:
        out.mkdir()
        (out / "old.txt").write_text("old")
    with pytest.raises(SegkitError, match=r"zz_bad\.json: shape 0 \('a', polygon\): needs at least 3"):
        convert_labelme(src, out, overwrite=overwrite)
    assert leftovers(tmp_path) == []
    if overwrite:
        assert [p.name for p in out.iterdir()] == ["old.txt"]
    else:
        assert not out.exists()


def test_unknown_label_with_given_labels(src, tmp_path):
    with pytest.raises(
        SegkitError, match=r"café 1\.json: unknown label: 1 label is not in the class list \(.*\): 'b' \(2\)"
    ):
        convert_labelme(src, tmp_path / "out", classes=["a"])
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(("content", "problem"), [(b"", "file is empty"), (b"{not json", "invalid JSON")])
def test_broken_json_fails_the_conversion(src, tmp_path, content, problem):
    (src / "broken.json").write_bytes(content)
    with pytest.raises(SegkitError, match=rf"broken\.json: {problem}"):
        convert_labelme(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_without_labelme_files(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "other.json").write_text("{}")
    with pytest.raises(SegkitError, match="no labelme JSON files found"):
        convert_labelme(tmp_path / "src", tmp_path / "out")
    with pytest.raises(SegkitError, match="folder not found"):
        convert_labelme(tmp_path / "missing", tmp_path / "out")


def test_out_may_not_be_the_source(src):
    with pytest.raises(SegkitError, match="output folder is an input"):
        convert_labelme(src, src, overwrite=True)
    with pytest.raises(SegkitError, match="output folder contains the input"):
        convert_labelme(src, src.parent, overwrite=True)
    with pytest.raises(SegkitError, match="output folder is inside the input folder"):
        convert_labelme(src, src / "converted", overwrite=True)
    assert len(list(src.iterdir())) == 3


def test_out_may_not_hold_the_images_the_annotations_point_to(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(make_image()).save(photos / "x.png")
    write_labelme(tmp_path / "ann", "x", [RECT_A], image_path="../photos/x.png")
    (tmp_path / "ann" / "x.png").unlink()  # the image lives in photos/ only
    with pytest.raises(SegkitError, match=r"photos: output folder contains the input .*x\.png"):
        convert_labelme(tmp_path / "ann", photos, overwrite=True)
    assert [p.name for p in photos.iterdir()] == ["x.png"] and leftovers(tmp_path) == []


def test_names_that_differ_only_in_case_are_refused(src, tmp_path):
    (src / "PLAIN.JSON").write_bytes((src / "plain.json").read_bytes())
    with pytest.raises(SegkitError, match=r"same name as PLAIN\.JSON but for letter case"):
        convert_labelme(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("label", "problem"), [("", "is empty"), ("dog\nbird", "holds a line break")])
def test_labels_that_cannot_be_read_back_are_refused(src, tmp_path, label, problem):
    write_labelme(src, "odd", [shape(label, [[0, 0], [5, 5]], "rectangle")])
    with pytest.raises(SegkitError, match=rf"odd\.json: shape 0: label.*{problem}"):
        convert_labelme(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_labels_with_spaces_read_back_as_written(src, tmp_path):
    write_labelme(src, "odd", [shape(" a ", [[0, 0], [5, 5]], "rectangle")])
    result = convert_labelme(src, tmp_path / "out")
    assert result.class_names == ["_background_", "a", "b"]
    assert read_class_list(tmp_path / "out" / "class_names.txt").names == result.class_names


def test_each_annotation_is_parsed_once(src, tmp_path, monkeypatch):
    import segkit.data.labelme as labelme_module

    parsed = []
    real = labelme_module.read_json
    monkeypatch.setattr(labelme_module, "read_json", lambda path, what: parsed.append(path.name) or real(path, what))
    convert_labelme(src, tmp_path / "out")
    assert sorted(parsed) == ["café 1.json", "plain.json"]


def test_stale_staging_folders_of_ended_processes_are_removed(src, tmp_path):
    dead = tmp_path / ".segkit-convert-999999999-abc"  # no such process
    reused = tmp_path / ".segkit-convert-1-def"  # pid 1 runs, but started after this folder was written
    mine = tmp_path / f".segkit-convert-{os.getpid()}-ghi"  # a run of this process, still going
    other = tmp_path / ".segkit-convert-legacy"  # no pid: not ours to judge
    for folder in (dead, reused, mine, other):
        (folder / "masks").mkdir(parents=True)
    os.utime(reused, (0, 0))
    convert_labelme(src, tmp_path / "out")
    assert sorted(leftovers(tmp_path)) == sorted([mine.name, other.name])


def test_full_disk_is_one_error_and_leaves_nothing(src, tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(SegkitError, match=r"cannot write \(the disk is full\)") as error:
        convert_labelme(src, tmp_path / "out")
    assert error.value.path == str(tmp_path / "out" / "images" / "café 1.png")  # where it was going
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_read_only_parent_is_one_error(src, tmp_path, monkeypatch):
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    with pytest.raises(SegkitError, match=rf"{tmp_path.name}: cannot write \(Permission denied\)"):
        convert_labelme(src, tmp_path / "out")


# --- real labelme data --------------------------------------------------------------------


def test_semantic_segmentation_matches_labelme_voc_export(shared_datasets, tmp_path):
    root = dataset_path(shared_datasets, "labelme_examples/semantic_segmentation")
    result = convert_labelme(root / "labelme_json", tmp_path / "out", classes=root / "labels.txt")
    golden_names = (root / "voc_export/class_names.txt").read_text().splitlines()
    assert result.class_names == golden_names
    assert (tmp_path / "out/class_names.txt").read_text().splitlines() == golden_names
    agree = total = 0
    for golden_path in sorted((root / "voc_export/masks").glob("*.png")):
        ours = np.asarray(Image.open(tmp_path / "out/masks" / golden_path.name))
        golden = np.asarray(Image.open(golden_path))
        agree, total = agree + int((ours == golden).sum()), total + golden.size
    assert total and agree / total >= 0.9999


def test_tutorial_with_embedded_image(shared_datasets, tmp_path):
    root = dataset_path(shared_datasets, "labelme_examples/tutorial_apc2016")
    result = convert_labelme(root / "labelme_json", tmp_path / "out", noviz=True)
    assert result.class_names == (root / "label_names.txt").read_text().split()
    ours = np.asarray(Image.open(tmp_path / "out/masks/apc2016_obj3.png"))
    assert (ours == np.asarray(Image.open(root / "export/masks/apc2016_obj3.png"))).mean() >= 0.9999
    assert Image.open(tmp_path / "out/images/apc2016_obj3.jpg").size == (1210, 907)


def test_primitives_contains_every_label(shared_datasets, tmp_path):
    root = dataset_path(shared_datasets, "labelme_examples/primitives")
    result = convert_labelme(root, tmp_path / "out")
    assert result.class_names == [
        "_background_",
        "circle",
        "line",
        "line_strip",
        "octagon",
        "point",
        "polygon",
        "rectangle",
    ]
    mask = np.asarray(Image.open(tmp_path / "out/masks/primitives.png"))
    assert np.unique(mask).tolist() == list(range(len(result.class_names)))


# --- command line -------------------------------------------------------------------------


def test_cli_collects_labels_and_prints_a_summary(src, tmp_path, capsys):
    assert segkit.cli.main(["convert", "labelme", str(src), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "found 3 labels: _background_, a, b" in printed and "converted 2 images" in printed
    assert (tmp_path / "out" / "visualization").is_dir()


def test_cli_with_labels_noviz(src, tmp_path, capsys):
    argv = ["convert", "labelme", str(src), str(tmp_path / "out"), "--labels", "a,b", "--noviz"]
    assert segkit.cli.main(argv) == 0
    assert "using 3 labels (--classes + _background_): _background_, a, b" in capsys.readouterr().out
    assert not (tmp_path / "out" / "visualization").exists()


def test_cli_labels_file(src, tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\nb\na\n")
    argv = ["convert", "labelme", str(src), str(tmp_path / "out"), "--labels", str(tmp_path / "labels.txt")]
    assert segkit.cli.main(argv) == 0
    assert (tmp_path / "out" / "class_names.txt").read_text().split() == ["_background_", "b", "a"]


def test_cli_errors_exit_2_naming_the_file(src, tmp_path, capsys):
    out = tmp_path / "out"
    assert segkit.cli.main(["convert", "labelme", str(src), str(out), "--labels", "a"]) == 2
    assert "café 1.json: unknown label: 1 label is not in the class list" in capsys.readouterr().err
    out.mkdir()
    (out / "keep").write_text("x")
    assert segkit.cli.main(["convert", "labelme", str(src), str(out)]) == 2
    assert f"{out}: exists and is not empty; use --overwrite" in capsys.readouterr().err
    assert segkit.cli.main(["convert", "labelme", str(src), str(out), "--overwrite"]) == 0
    assert not (out / "keep").exists()


def test_cli_needs_a_format(capsys):
    with pytest.raises(SystemExit) as error:
        segkit.cli.main(["convert"])
    assert error.value.code == 2 and "FORMAT" in capsys.readouterr().err
