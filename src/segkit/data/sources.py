"""Find a dataset's images and masks in a folder, whatever its layout.

Layouts, detected in this order in the data folder:

- ``voc``: ``JPEGImages/`` + ``SegmentationClass/``; ``ImageSets/Segmentation/*.txt``
  name the splits.
- ``folders``: ``images/`` + ``masks/`` (or the folder named by ``masks=``), matched
  by file name without extension (sub-folders allowed, hidden files ignored).
- ``labelme``: labelme ``*.json`` files (shapes are rasterised on load).

A folder holding ``train/``, ``val/``, ``test/`` ... sub-folders is a split dataset:
``split=`` picks one (default ``train``), and each split is one of the layouts above.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segkit.data.colors import ColorTable, load_color_table
from segkit.data.io import is_image_file, read_image
from segkit.data.masks import BINARY_MESSAGE, check_same_size, read_mask, scan_masks
from segkit.errors import SegkitError
from segkit.visualize import PALETTE

logger = logging.getLogger(__name__)

IMAGE_DIRS = ("images", "image", "imgs")
MASK_DIRS = ("masks", "mask", "labels", "label")
SPLIT_DIRS = ("train", "val", "valid", "validation", "test")
CLASS_FILES = ("class_names.txt", "labels.txt", "label_names.txt", "classes.txt", "classes.json")
LABELME_CLASS_FILES = CLASS_FILES[:-1]  # labelme label lists are text files
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
IGNORE_LABEL = "__ignore__"  # labelme-style class lists: pixels of this label are ignored
NO_PAIRS = "no image/mask pairs found (expected a labelme folder, images/ + masks/, or VOC layout)"


@dataclass(frozen=True)
class SampleRef:
    """The files of one sample; ``annotation`` is a labelme JSON (then ``mask`` is None)."""

    name: str
    image: Path | None
    mask: Path | None
    annotation: Path | None = None


@dataclass
class Problem:
    """Something wrong with one file of a dataset (reported, never fatal)."""

    file: str
    problem: str


@dataclass
class Sample:
    """One loaded pair: ``(H, W, 3)`` uint8 RGB image and ``(H, W)`` uint8 class mask."""

    image: np.ndarray
    mask: np.ndarray
    name: str


@dataclass
class DataSource:
    """A dataset folder resolved to sorted samples, class names and a mask encoding.

    Attributes:
        root: the folder the samples come from (the split folder for split datasets).
        layout: ``"labelme"``, ``"folders"`` or ``"voc"``.
        classes: class names in index order, background (class 0) first.
        ignore_index: mask value of unlabelled pixels.
        encoding: mask encoding (see :mod:`segkit.data.masks`) or ``"labelme"``.
        samples: pairs sorted by name.
        problems: what pairing and the mask scan found wrong (image without mask, mask
            without image, same name twice, unreadable mask); never fatal here.
        color_table: colours of RGB colour-coded masks, if any.
        split: the split chosen, if the dataset has splits.
        splits: the splits available.
    """

    root: Path
    layout: str
    classes: list[str]
    ignore_index: int
    encoding: str
    samples: list[SampleRef]
    problems: list[Problem] = field(default_factory=list)
    color_table: ColorTable | None = None
    split: str | None = None
    splits: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_names(self) -> list[str]:
        """The splits this dataset offers (sub-folders or VOC ImageSets); empty when none."""
        return list(self.splits)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        sample = self.load(index)
        return sample.image, sample.mask, sample.name

    def load(self, index: int) -> Sample:
        """Read sample ``index``: RGB image and class-index mask of the same size.

        Raises:
            SegkitError: naming the file that is unreadable, mismatched or has bad values.
        """
        ref = self.samples[index]
        if self.layout == "labelme":
            from segkit.data.labelme import rasterize, read_labelme

            annotation = read_labelme(ref.annotation)
            image = np.asarray(annotation.image)
            mask = rasterize(annotation, self.label_to_index(), ignore_index=self.ignore_index)
            check_same_size(ref.annotation, mask.shape, image.shape)
            return Sample(image, mask, ref.name)
        image = read_image(ref.image)
        mask = read_mask(
            ref.mask,
            self.encoding,
            color_table=self.color_table,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
        )
        check_same_size(ref.mask, mask.shape, image.shape)
        return Sample(image, mask, ref.name)

    def label_to_index(self) -> dict[str, int]:
        """Class name -> index (labelme's ``__ignore__`` label paints the ignore value)."""
        return {name: index for index, name in enumerate(self.classes)}


def open_source(
    path: str | Path,
    *,
    split: str | None = None,
    masks: str | None = None,
    colors: str | Path | ColorTable | None = None,
    classes: list[str] | str | Path | None = None,
    ignore_index: int = 255,
) -> DataSource:
    """Detect a dataset folder's layout, pairs, classes and mask encoding.

    Args:
        path: dataset folder.
        split: split to use when the folder has split sub-folders or VOC ImageSets
            (default ``train`` when there is one).
        masks: name of the masks folder next to ``images/`` (e.g. ``masks_rgb``).
        colors: colour table (file or :class:`ColorTable`) for RGB colour-coded masks.
        classes: class names in index order: a list, ``"a,b,c"`` or a .txt/.json/.csv
            file. Default: class_names.txt, labels.txt, label_names.txt, classes.txt or
            classes.json in the folder (or the parent of a split folder), else the colour
            table's names, else VOC's 21 names (VOC layout and palette), else
            background/foreground for 0/255 masks, else background, class_1..class_k.
        ignore_index: mask value of unlabelled pixels.

    Raises:
        SegkitError: no pairs, unknown split, RGB masks without colours, bad class list.
    """
    root = Path(path)
    if not root.is_dir():
        raise SegkitError(root, "not found" if not root.exists() else "not a folder (expected a dataset folder)")
    folder, layout, split, splits = _resolve_folder(root, split, masks)
    if layout == "labelme":
        return _open_labelme(folder, classes, ignore_index, split, splits)
    table = colors if isinstance(colors, ColorTable) or colors is None else load_color_table(colors)
    class_file = _find_class_file(folder, search_parent=folder != root)
    file_names, file_table = _read_class_file(class_file, ignore_index) if class_file else (None, None)
    if table is None and file_table is not None:
        logger.debug("using the colours of %s", class_file)
        table = file_table
    refs, problems = _voc_pairs(folder, split) if layout == "voc" else _folder_pairs(folder, masks)
    if not refs:
        unpaired = f"; {len(problems)} files without a partner" if problems else ""
        raise SegkitError(folder, NO_PAIRS + unpaired)
    scan = scan_masks([ref.mask for ref in refs], table)
    problems += [Problem(str(error.path), error.problem) for error in scan.errors]
    if scan.encoding == "binary-0-255":
        logger.info(BINARY_MESSAGE)
    if classes is not None:
        names = _parse_classes(classes, ignore_index)
    elif file_names is not None:
        names = file_names
    elif table is not None:
        names = table.class_names(ignore_index)
    else:
        names = _default_names(layout, scan.encoding, scan.values, scan.palette, ignore_index)
    return DataSource(
        folder, layout, _check_names(folder, names), ignore_index, scan.encoding, refs, problems, table, split, splits
    )


def _layout_of(folder: Path, masks: str | None) -> str | None:
    if masks is not None:
        return "folders" if (folder / masks).is_dir() and _image_dir(folder) else None
    if (folder / "JPEGImages").is_dir() and (folder / "SegmentationClass").is_dir():
        return "voc"
    if _image_dir(folder) and _first_dir(folder, MASK_DIRS):
        return "folders"
    if any(folder.glob("*.json")):
        from segkit.data.labelme import find_labelme_files

        if find_labelme_files(folder):
            return "labelme"
    return None


def _first_dir(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_dir()), None)


def _image_dir(folder: Path) -> Path | None:
    return _first_dir(folder, IMAGE_DIRS)


def _voc_splits(folder: Path) -> list[str]:
    return sorted(path.stem for path in (folder / "ImageSets" / "Segmentation").glob("*.txt"))


def list_splits(path: str | Path, masks: str | None = None) -> list[str]:
    """The splits a dataset folder offers (VOC ImageSets or split sub-folders), reading no image or mask."""
    root = Path(path)
    return _splits_of(root, _layout_of(root, masks))


def _splits_of(root: Path, layout: str | None) -> list[str]:
    if layout == "voc":
        return _voc_splits(root)
    if layout is not None:
        return []
    return [name for name in SPLIT_DIRS if (root / name).is_dir()]


def _resolve_folder(root: Path, split: str | None, masks: str | None) -> tuple[Path, str, str | None, list[str]]:
    """The data folder, its layout, the split chosen and the splits available."""
    layout = _layout_of(root, masks)
    splits = _splits_of(root, layout)
    if layout == "voc":
        if split is None and "train" in splits:
            split = "train"
        if split is not None and split not in splits:
            raise SegkitError(root, f"no split {split!r} in ImageSets/Segmentation; available: {_listing(splits)}")
        return root, layout, split, splits
    if layout is not None:
        if split is not None:
            raise SegkitError(root, f"split {split!r} requested but the folder has no split sub-folders")
        return root, layout, None, []
    if not splits:
        raise _no_layout_error(root, masks)
    split = split or "train"
    if split not in splits:
        raise SegkitError(root, f"no split {split!r}; available splits: {_listing(splits)}")
    layout = _layout_of(root / split, masks)
    if layout is None:
        raise _no_layout_error(root / split, masks)
    return root / split, layout, split, splits


def _no_layout_error(folder: Path, masks: str | None) -> SegkitError:
    if masks is not None and _image_dir(folder):
        return SegkitError(folder / masks, "masks folder not found")
    return SegkitError(folder, NO_PAIRS)


def _listing(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def _index_files(folder: Path, problems: list[Problem]) -> dict[str, Path]:
    """Image files under ``folder`` by relative path without extension; duplicates and broken links reported."""
    by_name: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not is_image_file(path) or any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_symlink() and not path.exists():
            problems.append(Problem(str(path), "broken symbolic link (missing target or a link loop); left out"))
            continue
        if not path.is_file():
            continue
        name = relative.with_suffix("").as_posix()
        if name in by_name:
            problems.append(Problem(str(path), f"another file has the same name ({by_name[name].name}); left out"))
        else:
            by_name[name] = path
    return by_name


def _folder_pairs(folder: Path, masks: str | None) -> tuple[list[SampleRef], list[Problem]]:
    problems: list[Problem] = []
    images = _index_files(_image_dir(folder), problems)
    mask_dir = folder / masks if masks is not None else _first_dir(folder, MASK_DIRS)
    mask_files = _index_files(mask_dir, problems)
    problems += [Problem(str(images[name]), "image without mask") for name in images if name not in mask_files]
    problems += [Problem(str(mask_files[name]), "mask without image") for name in mask_files if name not in images]
    refs = [SampleRef(name, images[name], mask_files[name]) for name in sorted(images) if name in mask_files]
    return refs, problems


def _voc_pairs(folder: Path, split: str | None) -> tuple[list[SampleRef], list[Problem]]:
    problems: list[Problem] = []
    images = _index_files(folder / "JPEGImages", problems)
    mask_files = _index_files(folder / "SegmentationClass", problems)
    problems += [Problem(str(mask_files[name]), "mask without image") for name in mask_files if name not in images]
    if split is None:  # JPEGImages also holds detection-only images: no mask is normal there
        names = sorted(name for name in mask_files if name in images)
    else:
        list_file = folder / "ImageSets" / "Segmentation" / f"{split}.txt"
        listed = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        for name in listed:
            if name not in images:
                problems.append(Problem(str(list_file), f"{name} is listed but has no image in JPEGImages/"))
            elif name not in mask_files:
                problems.append(Problem(str(images[name]), "image without mask (listed in " + list_file.name + ")"))
        names = sorted(name for name in set(listed) if name in images and name in mask_files)
    return [SampleRef(name, images[name], mask_files[name]) for name in names], problems


def _find_class_file(folder: Path, search_parent: bool, names: tuple[str, ...] = CLASS_FILES) -> Path | None:
    for directory in (folder, folder.parent) if search_parent else (folder,):
        for name in names:
            if (directory / name).is_file():
                return directory / name
    return None


def _read_txt_names(path: Path) -> list[str]:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise SegkitError(path, f"cannot read class list ({error})") from None
    names = [line for line in lines if line and line != IGNORE_LABEL]
    if not names:
        raise SegkitError(path, "no class names (expected one name per line)")
    return names


def _read_class_file(path: Path, ignore_index: int) -> tuple[list[str], ColorTable | None]:
    """Class names from a .txt (one per line), .csv (colour table) or .json (names or colour table) file."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        return _read_txt_names(path), None
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SegkitError(path, f"cannot read class list ({error})") from None
        listed = data.get("classes") if isinstance(data, dict) else data
        if isinstance(listed, list) and listed and all(isinstance(name, str) for name in listed):
            return [name for name in listed if name != IGNORE_LABEL], None
    table = load_color_table(path)
    return table.class_names(ignore_index), table


def _parse_classes(classes: list[str] | str | Path, ignore_index: int) -> list[str]:
    """``classes=``: a list, a comma-separated string, or a .txt/.json/.csv file."""
    if isinstance(classes, (list, tuple)):
        return [str(name) for name in classes]
    path = Path(classes)
    if path.is_file():
        return _read_class_file(path, ignore_index)[0]
    if isinstance(classes, str) and "," in classes:
        return [name.strip() for name in classes.split(",") if name.strip()]
    if path.suffix:
        raise SegkitError(path, "class list file not found")
    return [str(classes)]


def _check_names(folder: Path, names: list[str]) -> list[str]:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SegkitError(folder, f"class names must be unique; repeated: {duplicates}")
    if len(names) < 2:
        raise SegkitError(folder, f"need at least 2 classes (background first), got {names}")
    return names


def _default_names(
    layout: str, encoding: str, values: list[int], palette: np.ndarray | None, ignore_index: int
) -> list[str]:
    """Class names when none are given: VOC's, background/foreground, or class_1..class_k."""
    labels = [value for value in values if value != ignore_index]
    highest = max(labels, default=0)
    voc_palette = palette is not None and len(palette) >= 21 and np.array_equal(palette[:21], PALETTE[:21])
    if layout == "voc" and voc_palette and highest < len(VOC_CLASSES):
        return list(VOC_CLASSES)
    if encoding == "binary-0-255":
        return ["background", "foreground"]
    names = ["background"] + [f"class_{index}" for index in range(1, max(highest, 1) + 1)]
    logger.info("no class names given: using %s", ", ".join(names))
    return names


def _open_labelme(
    folder: Path,
    classes: list[str] | str | Path | None,
    ignore_index: int,
    split: str | None,
    splits: list[str],
) -> DataSource:
    from segkit.data.labelme import find_labelme_files, normalize_label_list

    json_paths = find_labelme_files(folder)
    refs = [SampleRef(path.stem, None, None, path) for path in json_paths]
    problems: list[Problem] = []
    class_file = _find_class_file(folder, search_parent=True, names=LABELME_CLASS_FILES)
    if classes is not None:  # labelme lists may leave out the background: it is added first
        names = normalize_label_list(_parse_classes(classes, ignore_index), "--classes")
    elif class_file is not None:
        names = normalize_label_list(_read_txt_names(class_file), class_file)
    else:
        names = _labelme_labels(json_paths, problems)
    return DataSource(
        folder, "labelme", _check_names(folder, names), ignore_index, "labelme", refs, problems, None, split, splits
    )


def _labelme_labels(json_paths: list[Path], problems: list[Problem]) -> list[str]:
    """All labels of the readable JSON files; unreadable ones become problems."""
    from segkit.data.labelme import collect_labels

    try:
        return collect_labels(json_paths)
    except SegkitError:  # find every bad file (a second pass only when one is bad)
        good = []
        for path in json_paths:
            try:
                collect_labels([path])
                good.append(path)
            except SegkitError as error:
                problems.append(Problem(str(error.path), error.problem))
        return collect_labels(good)


def split_by_name(names: list[str], fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic train/validation split: evenly spaced samples of the sorted names go to validation."""
    order = sorted(range(len(names)), key=lambda index: names[index])
    num_val = int(round(len(names) * fraction))
    if fraction > 0:
        num_val = min(max(num_val, 1), len(names) - 1)
    picked = {order[int((k + 0.5) * len(order) / num_val)] for k in range(num_val)} if num_val else set()
    train = [index for index in order if index not in picked]
    val = [index for index in order if index in picked]
    return train, val
