"""Dataset layouts: images/ + masks/, VOC, split folders, labelme; classes and encodings."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_path
from PIL import Image

from segkit.data.classes import VOC_CLASSES
from segkit.data.colors import load_color_table
from segkit.data.masks import BINARY_MESSAGE
from segkit.data.sources import (
    DataSource,
    Problem,
    SplitRoles,
    ValidationImages,
    list_splits,
    open_source,
    split_roles,
    validation_images,
)
from segkit.errors import SegkitError
from segkit.visualize import PALETTE

H, W = 6, 8


def ids_mask(seed: int, num_classes: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, (H, W), dtype=np.uint8)


def save(path: Path, array: np.ndarray, palette: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette.reshape(-1).tolist())
    image.save(path)
    return path


def make_folders(root: Path, masks: dict[str, np.ndarray], image_ext: str = ".png", mask_dir: str = "masks") -> Path:
    """``root/images/<name><image_ext>`` + ``root/<mask_dir>/<name>.png`` for every mask."""
    for name, mask in masks.items():
        save(root / "images" / f"{name}{image_ext}", np.full((*mask.shape[:2], 3), 90, np.uint8))
        save(root / mask_dir / f"{name}.png", mask)
    return root


# ---------------------------------------------------------------- images/ + masks/


def test_folders_layout_with_png_jpg_bmp_images(tmp_path: Path) -> None:
    masks = {"a": ids_mask(0), "b": ids_mask(1), "c": ids_mask(2)}
    for (name, mask), ext in zip(masks.items(), [".png", ".jpg", ".bmp"], strict=True):
        make_folders(tmp_path, {name: mask}, image_ext=ext)
    (tmp_path / "images" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "masks" / "notes.txt").write_text("not an image")
    source = open_source(tmp_path)
    assert isinstance(source, DataSource)
    assert (source.layout, source.encoding, source.root, len(source)) == ("folders", "index", tmp_path, 3)
    assert [ref.name for ref in source.samples] == ["a", "b", "c"]
    assert [ref.image.suffix for ref in source.samples] == [".png", ".jpg", ".bmp"]
    assert source.classes == ["background", "class_1", "class_2"] and source.num_classes == 3
    assert source.problems == [] and source.split is None and source.splits == []
    sample = source.load(1)
    assert sample.name == "b" and sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
    np.testing.assert_array_equal(sample.mask, masks["b"])
    image, mask, name = source[2]
    assert name == "c" and mask.dtype == np.uint8 and image.shape == (H, W, 3)


def test_unpaired_and_duplicate_files_are_problems(tmp_path: Path) -> None:
    make_folders(tmp_path, {"a": ids_mask(0), "b": ids_mask(1)})
    save(tmp_path / "images" / "lonely.png", np.zeros((H, W, 3), np.uint8))
    save(tmp_path / "images" / "a.jpg", np.zeros((H, W, 3), np.uint8))
    save(tmp_path / "masks" / "orphan.png", ids_mask(3))
    source = open_source(tmp_path)
    assert [ref.name for ref in source.samples] == ["a", "b"]
    assert source.samples[0].image.name == "a.jpg"  # sorted: a.jpg before a.png
    assert Problem(str(tmp_path / "images" / "lonely.png"), "image without mask") in source.problems
    assert Problem(str(tmp_path / "masks" / "orphan.png"), "mask without image") in source.problems
    assert any(p.file.endswith("a.png") and "same name" in p.problem for p in source.problems)


def test_nested_folders_pair_by_relative_path(tmp_path: Path) -> None:
    make_folders(tmp_path, {"city1/x": ids_mask(0), "city2/x": ids_mask(1)})
    assert [ref.name for ref in open_source(tmp_path).samples] == ["city1/x", "city2/x"]


def test_alternative_folder_names(tmp_path: Path) -> None:
    save(tmp_path / "image" / "a.png", np.zeros((H, W, 3), np.uint8))
    save(tmp_path / "label" / "a.png", ids_mask(0))
    assert len(open_source(tmp_path)) == 1


def test_binary_0_255_logs_once_and_names_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_folders(tmp_path, {f"m{i}": ids_mask(i, 2) * 255 for i in range(3)})
    with caplog.at_level(logging.INFO):
        source = open_source(tmp_path)
        masks = [source.load(i).mask for i in range(len(source))]
    assert source.encoding == "binary-0-255"
    assert source.classes == ["background", "foreground"]
    assert caplog.text.count(BINARY_MESSAGE) == 1
    np.testing.assert_array_equal(masks[0], ids_mask(0, 2))


def test_size_mismatch_fails_on_load(tmp_path: Path) -> None:
    make_folders(tmp_path, {"a": ids_mask(0)})
    save(tmp_path / "images" / "a.png", np.zeros((H + 1, W, 3), np.uint8))
    source = open_source(tmp_path)
    with pytest.raises(SegkitError, match=f"mask is {W}x{H} but its image is {W}x{H + 1}") as error:
        source.load(0)
    assert error.value.path == str(tmp_path / "masks" / "a.png")


def test_rgb_masks_folder_with_colour_table(tmp_path: Path) -> None:
    colours = np.array([[0, 0, 0], [250, 0, 0], [0, 0, 250]], dtype=np.uint8)
    masks = {"a": ids_mask(0), "b": ids_mask(1)}
    make_folders(tmp_path, {name: colours[mask] for name, mask in masks.items()}, mask_dir="masks_rgb")
    (tmp_path / "colors.csv").write_text("bg,0,0,0\nred,250,0,0\nblue,0,0,250\n")
    with pytest.raises(SegkitError, match="masks not found"):
        open_source(tmp_path, masks="nope")
    with pytest.raises(SegkitError, match="pass --colors"):
        open_source(tmp_path, masks="masks_rgb")
    for colors in (tmp_path / "colors.csv", str(tmp_path / "colors.csv"), load_color_table(tmp_path / "colors.csv")):
        source = open_source(tmp_path, masks="masks_rgb", colors=colors)
        assert (source.encoding, source.classes) == ("rgb", ["bg", "red", "blue"])
        np.testing.assert_array_equal(source.load(1).mask, masks["b"])


def test_classes_json_in_root_gives_names_and_colours(tmp_path: Path) -> None:
    colours = np.array([[60, 16, 152], [132, 41, 246], [0, 0, 0]], dtype=np.uint8)
    mask = np.array([[0, 1, 2, 2]], dtype=np.uint8)
    make_folders(tmp_path, {"a": np.array([[0, 1, 255, 255]], dtype=np.uint8)})
    save(tmp_path / "masks_rgb" / "a.png", colours[mask])
    classes = [
        {"index": 0, "name": "Building", "rgb": [60, 16, 152]},
        {"index": 1, "name": "Land", "rgb": [132, 41, 246]},
        {"index": 255, "name": "unmapped", "rgb": [0, 0, 0]},
    ]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": classes}))
    index_source = open_source(tmp_path)
    rgb_source = open_source(tmp_path, masks="masks_rgb")
    assert index_source.classes == rgb_source.classes == ["Building", "Land"]
    assert (index_source.encoding, rgb_source.encoding) == ("index", "rgb")
    np.testing.assert_array_equal(index_source.load(0).mask, rgb_source.load(0).mask)


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        (["sky", "road", "car"], ["sky", "road", "car"]),
        ("sky, road,car", ["sky", "road", "car"]),
        ("FILE", ["_background_", "road", "car"]),
    ],
)
def test_explicit_classes(tmp_path: Path, classes: object, expected: list[str]) -> None:
    make_folders(tmp_path / "data", {"a": ids_mask(0)})
    (tmp_path / "names.txt").write_text("__ignore__\n_background_\nroad\n\ncar\n")
    classes = tmp_path / "names.txt" if classes == "FILE" else classes
    assert open_source(tmp_path / "data", classes=classes).classes == expected


@pytest.mark.parametrize("file_name", ["class_names.txt", "labels.txt", "classes.json"])
def test_class_file_in_root(tmp_path: Path, file_name: str) -> None:
    make_folders(tmp_path, {"a": ids_mask(0)})
    names = ["bg", "x", "y"]
    text = json.dumps(names) if file_name.endswith(".json") else "\n".join(names)
    (tmp_path / file_name).write_text(text)
    assert open_source(tmp_path).classes == names


def test_bad_class_lists(tmp_path: Path) -> None:
    make_folders(tmp_path, {"a": ids_mask(0)})
    with pytest.raises(SegkitError, match="class list file not found"):
        open_source(tmp_path, classes="missing.txt")
    with pytest.raises(SegkitError, match="class names repeated: a"):
        open_source(tmp_path, classes="a,b,a")
    with pytest.raises(SegkitError, match="at least 2 classes"):
        open_source(tmp_path, classes="only")


@pytest.mark.parametrize(
    ("setup", "classes", "origin"),
    [
        (lambda root: (root / "class_names.txt").write_text("bg\na\nb\n"), None, "class_names.txt"),
        (lambda root: (root / "classes.json").write_text('["bg", "a", "b"]'), None, "classes.json"),
        (lambda root: None, "bg,a,b", "--classes"),
        (lambda root: None, ["bg", "a", "b"], "--classes"),
        (lambda root: (root / "names.csv").write_text("name\nbg\na\nb\n"), "names.csv", "--classes names.csv"),
        (lambda root: None, None, "values found"),
    ],
)
def test_the_source_says_where_its_class_names_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup, classes, origin: str
) -> None:
    make_folders(tmp_path, {"a": ids_mask(0)})
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    source = open_source(tmp_path, classes=classes)
    assert source.classes_origin == origin and len(source.classes) == 3


def test_colour_table_and_binary_origins(tmp_path: Path) -> None:
    make_folders(tmp_path / "bin", {"a": ids_mask(0, 2) * 255})
    assert open_source(tmp_path / "bin").classes_origin == "0/255 masks"
    colours = np.array([[0, 0, 0], [250, 0, 0], [0, 0, 250]], dtype=np.uint8)
    make_folders(tmp_path / "rgb", {"a": colours[ids_mask(0)]})
    (tmp_path / "colors.csv").write_text("bg,0,0,0\nred,250,0,0\nblue,0,0,250\n")
    assert open_source(tmp_path / "rgb", colors=tmp_path / "colors.csv").classes_origin == "colors.csv colour table"


def test_0_255_masks_are_not_binary_when_the_class_list_names_three_classes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_folders(tmp_path, {f"m{i}": ids_mask(i, 2) * 255 for i in range(2)})
    (tmp_path / "class_names.txt").write_text("background\ncat\ndog\n")
    with caplog.at_level(logging.INFO):
        source = open_source(tmp_path, ignore_index=255)
    assert (source.encoding, source.num_classes) == ("index", 3)
    assert BINARY_MESSAGE not in caplog.text and "not as 0/255 binary" in caplog.text
    np.testing.assert_array_equal(source.load(0).mask, ids_mask(0, 2) * 255)  # 255 stays the ignore value
    assert open_source(tmp_path, classes="background,cat").encoding == "binary-0-255"  # 2 classes: binary


def test_class_list_that_is_not_utf8_is_one_error(tmp_path: Path) -> None:
    make_folders(tmp_path, {"a": ids_mask(0)})
    (tmp_path / "class_names.txt").write_bytes("bg\nchat\u00e9\nb\n".encode("latin-1"))
    with pytest.raises(SegkitError, match="class list is not UTF-8 text") as error:
        open_source(tmp_path)
    assert error.value.path == str(tmp_path / "class_names.txt")


def test_problem_summary_says_how_many_and_which(tmp_path: Path) -> None:
    make_folders(tmp_path, {"a": ids_mask(0)})
    assert open_source(tmp_path).problem_summary() == ""
    for name in ("b", "c", "d", "e"):
        save(tmp_path / "images" / f"{name}.png", np.zeros((H, W, 3), np.uint8))
    summary = open_source(tmp_path).problem_summary()
    assert summary.startswith(f"4 problems in {tmp_path}: images/b.png: image without mask; images/c.png")
    assert summary.endswith(f"and 1 more (segkit inspect {tmp_path} lists them all)")


def test_rgb_mask_announcing_a_decompression_bomb_is_a_problem(tmp_path: Path) -> None:
    import struct
    import zlib

    colours = np.array([[0, 0, 0], [250, 0, 0], [0, 0, 250]], dtype=np.uint8)
    make_folders(tmp_path, {"a": colours[ids_mask(0)], "b": colours[ids_mask(1)]})

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20_000, 10_000, 8, 2, 0, 0, 0)  # RGB, 200 megapixels (pixels cut short)
    bomb = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    (tmp_path / "masks" / "b.png").write_bytes(bomb)
    (tmp_path / "colors.csv").write_text("bg,0,0,0\nred,250,0,0\nblue,0,0,250\n")
    source = open_source(tmp_path, colors=tmp_path / "colors.csv")
    assert [p.file for p in source.problems] == [str(tmp_path / "masks" / "b.png")]
    assert "decompression bomb" in source.problems[0].problem
    with pytest.raises(SegkitError, match="decompression bomb"):
        source.load(1)


def test_16_bit_masks_in_folders(tmp_path: Path) -> None:
    make_folders(tmp_path, {"a": ids_mask(0).astype(np.uint16)})
    source = open_source(tmp_path)
    assert source.encoding == "index" and source.num_classes == 3
    np.testing.assert_array_equal(source.load(0).mask, ids_mask(0))


def test_unreadable_mask_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    make_folders(tmp_path, {"a": ids_mask(0), "b": ids_mask(1)})
    (tmp_path / "masks" / "b.png").write_bytes(b"")
    source = open_source(tmp_path)
    assert len(source) == 2
    assert source.problems == [Problem(str(tmp_path / "masks" / "b.png"), "file is empty (0 bytes)")]
    with pytest.raises(SegkitError, match="0 bytes"):
        source.load(1)


# ---------------------------------------------------------------- nothing to find


def test_unrecognised_folders(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(SegkitError, match="no image/mask pairs found \\(expected a labelme folder") as error:
        open_source(tmp_path)
    assert error.value.path == str(tmp_path)
    with pytest.raises(SegkitError, match="not found"):
        open_source(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SegkitError, match="not a folder"):
        open_source(tmp_path / "file.txt")


def test_folders_without_matching_names(tmp_path: Path) -> None:
    save(tmp_path / "images" / "a.png", np.zeros((H, W, 3), np.uint8))
    save(tmp_path / "masks" / "b.png", ids_mask(0))
    with pytest.raises(SegkitError, match=r"no image/mask pairs found.*2 files without a partner"):
        open_source(tmp_path)


def test_names_that_differ_by_an_ending_get_the_patterns_that_pair_them(tmp_path: Path) -> None:
    """DRIVE's ``21_training.tif`` and ``21_manual1.gif``; Carvana's ``x_01.jpg`` and ``x_01_mask.gif``."""
    for seed, name in enumerate(["21", "22"]):
        save(tmp_path / "images" / f"{name}_training.png", np.zeros((H, W, 3), np.uint8))
        save(tmp_path / "labels" / f"{name}_manual1.png", ids_mask(seed))
    save(tmp_path / "fov" / "21_training_mask.png", ids_mask(0))  # another folder that pairs by ending: named too
    patterns = "with --images 'images/{id}_training.png', these --masks pair them: 'labels/{id}_manual1.png'"
    with pytest.raises(
        SegkitError,
        match=re.escape(f"{patterns} (2 of 2 images)"),
    ):
        open_source(tmp_path)
    source = open_source(tmp_path, images="images/{id}_training.png", masks="labels/{id}_manual1.png")
    assert [ref.name for ref in source.samples] == ["21", "22"]
    carvana = tmp_path / "carvana"
    for seed, name in enumerate(["c1_01", "c1_02"]):
        save(carvana / "train" / f"{name}.png", np.zeros((H, W, 3), np.uint8))
        save(carvana / "train_masks" / f"{name}_mask.png", ids_mask(seed))
    patterns = "with --images 'train/{id}.png', these --masks pair them: 'train_masks/{id}_mask.png'"
    with pytest.raises(SegkitError, match=re.escape(f"{patterns} (2 of 2 images)")):
        open_source(carvana)
    assert len(open_source(carvana, images="train/{id}.png", masks="train_masks/{id}_mask.png")) == 2


# ---------------------------------------------------------------- VOC


def make_voc(root: Path, names: list[str], palette: np.ndarray = PALETTE) -> Path:
    for i, name in enumerate(names):
        save(root / "JPEGImages" / f"{name}.jpg", np.zeros((H, W, 3), np.uint8))
        mask = ids_mask(i, 4)
        mask[0, 0] = 255
        save(root / "SegmentationClass" / f"{name}.png", mask, palette)
    save(root / "JPEGImages" / "detection_only.jpg", np.zeros((H, W, 3), np.uint8))
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (sets / "val.txt").write_text(f"{names[2]}\nghost\n")
    return root


def test_voc_layout_splits_and_names(tmp_path: Path) -> None:
    make_voc(tmp_path, ["2007_1", "2007_2", "2007_3"])
    source = open_source(tmp_path)
    assert (source.layout, source.encoding, source.split) == ("voc", "palette", "train")
    assert source.splits == ["train", "val"]
    assert [ref.name for ref in source.samples] == ["2007_1", "2007_2"]
    assert source.classes == VOC_CLASSES and source.problems == []
    assert source.load(0).mask[0, 0] == 255
    val = open_source(tmp_path, split="val")
    assert [ref.name for ref in val.samples] == ["2007_3"]
    val_list = str(tmp_path / "ImageSets" / "Segmentation" / "val.txt")
    assert val.problems == [Problem(val_list, "ghost is listed but has no image in JPEGImages/")]
    with pytest.raises(SegkitError, match="no split 'test' in ImageSets/Segmentation; available: train, val"):
        open_source(tmp_path, split="test")


def test_voc_without_imagesets_uses_every_pair(tmp_path: Path) -> None:
    make_voc(tmp_path, ["a", "b", "c"])
    for path in (tmp_path / "ImageSets" / "Segmentation").iterdir():
        path.unlink()
    source = open_source(tmp_path)
    assert (source.split, len(source), source.problems) == (None, 3, [])  # detection-only image is normal


def test_voc_names_only_with_voc_palette(tmp_path: Path) -> None:
    other = PALETTE.copy()
    other[1] = (1, 2, 3)
    make_voc(tmp_path, ["a", "b", "c"], palette=other)
    assert open_source(tmp_path).classes == ["background", "class_1", "class_2", "class_3"]
    (tmp_path / "class_names.txt").write_text("_background_\nw\nx\ny\n")
    assert open_source(tmp_path).classes == ["_background_", "w", "x", "y"]


# ---------------------------------------------------------------- split sub-folders


def test_split_subfolders(tmp_path: Path) -> None:
    make_folders(tmp_path / "train", {"a": ids_mask(0), "b": ids_mask(1)})
    make_folders(tmp_path / "val", {"c": ids_mask(2)})
    (tmp_path / "class_names.txt").write_text("bg\none\ntwo\n")
    train = open_source(tmp_path)
    assert (train.split, train.root, len(train)) == ("train", tmp_path / "train", 2)
    assert train.splits == ["train", "val"]
    assert train.classes == ["bg", "one", "two"]  # class file of the parent folder
    val = open_source(tmp_path, split="val")
    assert [ref.name for ref in val.samples] == ["c"]
    with pytest.raises(SegkitError, match="no split 'test'; available splits: train, val"):
        open_source(tmp_path, split="test")
    with pytest.raises(SegkitError, match="no split sub-folders"):
        open_source(tmp_path / "train", split="val")


@pytest.mark.parametrize(
    ("splits", "roles"),
    [
        (["train", "valid"], SplitRoles("train", "valid", None)),
        (["test", "train", "val"], SplitRoles("train", "val", "test")),
        (["train", "validation", "test"], SplitRoles("train", "validation", "test")),
        (["train", "trainval"], SplitRoles("train", None, None)),
        (["training", "validation"], SplitRoles("training", "validation", None)),  # ADE20K, DRIVE's training/
        ([], SplitRoles()),
    ],
)
def test_split_roles_from_folder_names(splits: list[str], roles: SplitRoles) -> None:
    assert split_roles(splits) == roles


def test_train_and_valid_folders(tmp_path: Path) -> None:
    make_folders(tmp_path / "train", {"a": ids_mask(0), "b": ids_mask(1)})
    make_folders(tmp_path / "valid", {"c": ids_mask(2)})
    roles = split_roles(list_splits(tmp_path))
    assert (roles.train, roles.validation, roles.evaluation) == ("train", "valid", "valid")
    assert open_source(tmp_path).split == "train"
    assert [ref.name for ref in open_source(tmp_path, split=roles.validation).samples] == ["c"]


def save_pair(images: Path, masks: Path, name: str, seed: int) -> None:
    """One image in ``images`` and its mask of the same name in ``masks``."""
    save(images / f"{name}.png", np.full((H, W, 3), 90, np.uint8))
    save(masks / f"{name}.png", ids_mask(seed))


def test_camvid_split_folders_with_annot_siblings(tmp_path: Path) -> None:
    """SegNet's CamVid: ``train/`` + ``trainannot/``, ``val/`` + ``valannot/``, ``test/`` + ``testannot/``."""
    for seed, (split, names) in enumerate({"train": ["a", "b"], "val": ["c"], "test": ["d"]}.items()):
        for name in names:
            save_pair(tmp_path / split, tmp_path / f"{split}annot", name, seed)
    (tmp_path / "train.txt").write_text("/SegNet/CamVid/train/a.png /SegNet/CamVid/trainannot/a.png\n")
    (tmp_path / "class_names.txt").write_text("sky\nbuilding\npole\n")
    assert list_splits(tmp_path) == ["train", "val", "test"]
    assert validation_images(tmp_path, None, None, 0.2) == ValidationImages(tmp_path, "val", None)
    train = open_source(tmp_path)
    assert (train.layout, train.split, train.root, train.classes) == (
        "folders",
        "train",
        tmp_path,
        ["sky", "building", "pole"],
    )
    assert [(ref.name, ref.image.parent.name, ref.mask.parent.name) for ref in train.samples] == [
        ("a", "train", "trainannot"),
        ("b", "train", "trainannot"),
    ]
    assert [ref.mask.parent.name for ref in open_source(tmp_path, split="test").samples] == ["testannot"]


@pytest.mark.parametrize(
    ("images", "masks", "splits"),
    [
        ("{split}_images", "{split}_masks", ["train", "val"]),
        ("images/{split}", "masks/{split}", ["train", "val"]),
        ("images/{split}", "annotations/{split}", ["training", "validation"]),  # ADE20K
        ("img_dir/{split}", "ann_dir/{split}", ["train", "val"]),  # MMSegmentation's custom datasets
    ],
)
def test_split_folder_pairs(tmp_path: Path, images: str, masks: str, splits: list[str]) -> None:
    train, val = splits
    for split, names in ((train, ["a", "b"]), (val, ["c"])):
        for seed, name in enumerate(names):
            save_pair(tmp_path / images.format(split=split), tmp_path / masks.format(split=split), name, seed)
    roles = split_roles(list_splits(tmp_path))
    assert (roles.train, roles.validation) == (train, val)
    assert [ref.name for ref in open_source(tmp_path).samples] == ["a", "b"]  # the validation images stay apart
    assert [ref.name for ref in open_source(tmp_path, split=val).samples] == ["c"]


def test_images_folder_with_files_of_its_own_stays_one_dataset(tmp_path: Path) -> None:
    save_pair(tmp_path / "images", tmp_path / "masks", "a", 0)
    save_pair(tmp_path / "images" / "train", tmp_path / "masks" / "train", "b", 1)
    source = open_source(tmp_path)
    assert (source.split, list_splits(tmp_path)) == (None, [])
    assert [ref.name for ref in source.samples] == ["a", "train/b"]


def test_split_sub_folder_with_a_layout_of_its_own_wins(tmp_path: Path) -> None:
    make_folders(tmp_path / "train", {"a": ids_mask(0)})
    save_pair(tmp_path / "elsewhere", tmp_path / "train_masks", "z", 1)
    assert [ref.image.parent.parent.name for ref in open_source(tmp_path).samples] == ["train"]


def test_voc_split_list_that_is_not_utf8_is_one_error(tmp_path: Path) -> None:
    make_voc(tmp_path, ["a", "b", "c"])
    list_file = tmp_path / "ImageSets" / "Segmentation" / "train.txt"
    list_file.write_bytes(b"a\nb\xe9\n")
    with pytest.raises(SegkitError, match="split list is not UTF-8 text") as error:
        open_source(tmp_path)
    assert error.value.path == str(list_file)


def test_split_without_pairs(tmp_path: Path) -> None:
    make_folders(tmp_path / "train", {"a": ids_mask(0)})
    save(tmp_path / "test" / "images" / "x.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(SegkitError, match="no image/mask pairs") as error:
        open_source(tmp_path, split="test")
    assert error.value.path == str(tmp_path / "test")


# ---------------------------------------------------------------- labelme


def write_labelme(folder: Path, name: str, shapes: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 50, np.uint8)).save(folder / f"{name}.png")
    data = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": f"{name}.png",
        "imageData": None,
        "imageHeight": H,
        "imageWidth": W,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def rectangle(label: str, x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"label": label, "points": [[x0, y0], [x1, y1]], "shape_type": "rectangle", "flags": {}, "group_id": None}


@pytest.fixture
def labelme_folder(tmp_path: Path) -> Path:
    pytest.importorskip("segkit.data.labelme")
    folder = tmp_path / "json"
    write_labelme(folder, "one", [rectangle("dog", 0, 0, 3, 2), rectangle("__ignore__", 6, 4, 7, 5)])
    write_labelme(folder, "two", [rectangle("cat", 1, 1, 2, 2)])
    (folder / "classes.json").write_text(json.dumps({"not": "labelme"}))
    return folder


def test_labelme_layout_collects_labels(labelme_folder: Path) -> None:
    source = open_source(labelme_folder)
    assert (source.layout, source.encoding, len(source)) == ("labelme", "labelme", 2)
    assert source.classes == ["_background_", "cat", "dog"]
    assert [ref.name for ref in source.samples] == ["one", "two"]
    assert source.samples[0].annotation == labelme_folder / "one.json" and source.samples[0].mask is None
    sample = source.load(0)
    assert sample.image.shape == (H, W, 3) and sample.mask.shape == (H, W)
    assert sample.mask[0, 0] == 2 and sample.mask[5, 7] == 255 and sample.mask[3, 5] == 0


def test_labelme_label_file_next_to_or_above_the_jsons(labelme_folder: Path) -> None:
    (labelme_folder.parent / "labels.txt").write_text("__ignore__\n_background_\ndog\ncat\nbird\n")
    source = open_source(labelme_folder)
    assert source.classes == ["_background_", "dog", "cat", "bird"]
    assert source.load(0).mask[0, 0] == 1
    (labelme_folder / "class_names.txt").write_text("_background_\ncat\ndog\n")
    assert open_source(labelme_folder).classes == ["_background_", "cat", "dog"]
    assert open_source(labelme_folder, classes=["background", "dog", "cat"]).classes == ["background", "dog", "cat"]
    assert open_source(labelme_folder, classes="dog,cat").classes == ["_background_", "dog", "cat"]
    assert open_source(labelme_folder, classes=["dog", "cat"]).classes == ["_background_", "dog", "cat"]
    with pytest.raises(SegkitError, match=r"two\.json: unknown label: 1 label is not in the class list .*'cat' \(1\)"):
        open_source(labelme_folder, classes="dog")  # said as the folder is opened, not at the first image


def test_labelme_bad_json_is_a_problem(labelme_folder: Path) -> None:
    (labelme_folder / "three.json").write_text("{broken")
    source = open_source(labelme_folder)
    assert source.classes == ["_background_", "cat", "dog"]
    assert [p.file for p in source.problems] == [str(labelme_folder / "three.json")]
    assert "invalid JSON" in source.problems[0].problem


def test_labelme_split_subfolders(labelme_folder: Path) -> None:
    root = labelme_folder.parent
    labelme_folder.rename(root / "train")
    assert open_source(root).layout == "labelme"


# ---------------------------------------------------------------- real data


def test_real_voc_export_and_labelme_folder_agree(shared_datasets: Path) -> None:
    pytest.importorskip("segkit.data.labelme")
    semantic = dataset_path(shared_datasets, "labelme_examples", "semantic_segmentation")
    export = open_source(semantic / "voc_export")
    labelme = open_source(semantic / "labelme_json")
    assert (export.layout, export.encoding, len(export)) == ("folders", "palette", 3)
    assert export.classes == labelme.classes and len(export.classes) == 21
    np.testing.assert_array_equal(export.load(0).mask, labelme.load(0).mask)


def test_real_split_folder_dataset(shared_datasets: Path) -> None:
    isbi = dataset_path(shared_datasets, "isbi2012_membrane")
    source = open_source(isbi)
    assert (source.split, source.splits) == ("train", ["train", "test"])
    assert (source.encoding, len(source)) == ("binary-0-255", 30)
    assert source.samples[0].image.parent.name == "images"
    with pytest.raises(SegkitError, match="no image/mask pairs"):
        open_source(isbi, split="test")
