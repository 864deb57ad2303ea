"""Find a dataset's images and masks in a folder, whatever its layout.

Layouts, detected in this order in the data folder:

- ``voc``: ``JPEGImages/`` + ``SegmentationClass/``; ``ImageSets/Segmentation/*.txt``
  name the splits.
- ``folders``: ``images/`` + ``masks/`` (or the folders named by ``images=`` and ``masks=``),
  matched by file name without extension (sub-folders allowed, hidden files ignored); or
  file name patterns with ``{id}`` when images and masks are named differently
  (``images="images/{id}_training.tif", masks="1st_manual/{id}_manual1.gif"``), matched by id.
  ``roi_masks=`` (a folder or pattern alike) adds a region-of-interest mask per image:
  pixels outside it (value 0) are ignored, as the ignore value is.
- ``labelme``: labelme ``*.json`` files (shapes are rasterised on load).

A folder holding ``train/``, ``val/``, ``test/`` ... sub-folders is a split dataset:
``split=`` picks one (default the training split), and each split is one of the
layouts above. A split may also keep its images and masks in two folders of the data folder
(see ``_split_places``): ``train/`` + ``trainannot/`` (SegNet's CamVid), ``train_images/`` +
``train_masks/``, or ``images/train/`` + ``masks/train/`` (ADE20K's ``images/training/`` +
``annotations/training/``, MMSegmentation's ``img_dir/`` + ``ann_dir/``). :func:`split_roles`
says which split is for training, validation and testing; ``train``, ``evaluate`` and
``inspect`` all ask it.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segkit.data.classes import (
    IGNORE_LABEL,
    LABELME_CLASS_FILES,
    ClassList,
    default_class_list,
    find_class_file,
    read_class_file,
    read_class_list,
    table_class_list,
    with_background_first,
)
from segkit.data.colors import ColorTable, load_color_table
from segkit.data.io import (
    glob_image_files,
    index_image_files,
    is_image_file,
    peek_image,
    read_image,
    read_text,
    upright_size,
)
from segkit.data.label_map import LabelMap, check_known_labels, describe_groups, instance_groups, read_label_map
from segkit.data.masks import (
    BINARY_MESSAGE,
    check_same_size,
    fit_mask,
    is_binary_0_255,
    is_scaled_copy,
    read_mask,
    read_region,
    scan_masks,
)
from segkit.errors import SegkitError

logger = logging.getLogger(__name__)

IMAGE_DIRS = ("images", "image", "imgs", "img_dir")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "ann_dir")
# A split's masks beside its image folder: train/ + trainannot/ (SegNet's CamVid), train_images/ + train_masks/
MASK_SUFFIXES = ("annot", "_annot", "_masks", "_mask", "_labels", "_label", "_annotations")
# Split sub-folder names by role; SPLIT_DIRS lists them all, in the order they are reported.
TRAIN_SPLITS = ("train", "training")
VALIDATION_SPLITS = ("val", "valid", "validation")
TEST_SPLITS = ("test",)
SPLIT_DIRS = TRAIN_SPLITS + VALIDATION_SPLITS + TEST_SPLITS
NO_PAIRS = "no image/mask pairs found (expected a labelme folder, images/ + masks/, or VOC layout)"
_PROBLEMS_IN_SUMMARY = 3


@dataclass(frozen=True)
class SplitRoles:
    """Which of a dataset's splits trains, validates and tests (``None`` when it has none).

    Attributes:
        train: the split ``segkit train`` trains on (and ``inspect`` reads by default).
        validation: the split ``segkit train`` validates on (``val``, ``valid`` or ``validation``).
        test: the held-out test split.
    """

    train: str | None = None
    validation: str | None = None
    test: str | None = None

    @property
    def evaluation(self) -> str | None:
        """The split ``segkit evaluate`` scores when none is asked for: validation, else test."""
        return self.validation or self.test


def split_roles(splits: Sequence[str]) -> SplitRoles:
    """Which of ``splits`` (sub-folder or VOC ImageSets names) trains, validates and tests.

    ``train/`` + ``valid/`` gives ``SplitRoles(train="train", validation="valid")``; the
    first of ``val``, ``valid``, ``validation`` present is the validation split.
    """

    def first(names: tuple[str, ...]) -> str | None:
        return next((name for name in names if name in splits), None)

    return SplitRoles(first(TRAIN_SPLITS), first(VALIDATION_SPLITS), first(TEST_SPLITS))


@dataclass(frozen=True)
class ValidationImages:
    """Where a training run's validation images are.

    Attributes:
        folder: the dataset folder (``--val`` or the training data).
        split: the split of ``folder`` to read (``None``: its only or default one).
        held_out: the share of ``folder``'s images held out by name (``--val-split``), or ``None``
            when every image of ``folder``/``split`` validates.
    """

    folder: str | Path
    split: str | None
    held_out: float | None

    def describe(self) -> str:
        """``folder`` with the split or share, as reports name it."""
        if self.held_out:
            return f"{self.folder} (held out {self.held_out:g})"
        return f"{self.folder} (split {self.split})" if self.split else str(self.folder)


def validation_images(
    data: str | Path, val: str | Path | None, masks: str | None, val_split: float, images: str | None = None
) -> ValidationImages:
    """The validation images of a training run on ``data``, as ``segkit train`` finds them.

    ``--val`` when given; else the dataset's validation split (``val``, ``valid`` or
    ``validation``) beside its training split; else ``val_split`` of the training images,
    held out by name.
    """
    if val:
        return ValidationImages(val, None, None)
    roles = split_roles(list_splits(data, masks, images)) if Path(data).is_dir() else SplitRoles()
    if roles.validation is not None and roles.train is not None:
        return ValidationImages(data, roles.validation, None)
    return ValidationImages(data, roles.train, val_split)


@dataclass(frozen=True)
class SampleRef:
    """The files of one sample; ``annotation`` is a labelme JSON (then ``mask`` is None)."""

    name: str
    image: Path | None
    mask: Path | None
    annotation: Path | None = None
    roi: Path | None = None

    @property
    def label_file(self) -> Path:
        """The file holding the labels: the labelme JSON, else the mask."""
        path = self.annotation or self.mask
        assert path is not None, "a sample has a mask or an annotation"
        return path

    @property
    def image_file(self) -> Path:
        """The image file of a mask-layout sample (labelme samples read theirs through the JSON)."""
        assert self.image is not None, "a mask-layout sample has an image file"
        return self.image


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
        classes: class names in index order.
        ignore_index: mask value of unlabelled pixels.
        encoding: mask encoding (see :mod:`segkit.data.masks`) or ``"labelme"``.
        samples: pairs sorted by name.
        problems: what pairing and the mask scan found wrong (image without mask, mask
            without image, same name twice, unreadable mask); never fatal here, and
            files left out of ``samples`` are among them (see :meth:`problem_summary`).
        color_table: colours of RGB colour-coded masks, if any.
        split: the split chosen, if the dataset has splits.
        splits: the splits available.
        classes_origin: where the class names came from (``"class_names.txt"``,
            ``"--classes"``, ``"classes.json colour table"``, ``"VOC names"``,
            ``"0/255 masks"``, ``"values found"``, ``"labels found"`` ...).
        fit_masks: resize (nearest) a mask that is a scaled copy of its image to the image's size.
        label_map: labelme labels -> classes (``--label-map``), or None.
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
    classes_origin: str = ""
    fit_masks: bool = False
    label_map: LabelMap | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def problem_summary(self, limit: int = _PROBLEMS_IN_SUMMARY) -> str:
        """One line for a log: how many problems and the first few files (empty when there are none).

        ``"2 problems in data/: images/c.png: image without mask; masks/d.png: mask
        without image"``; beyond ``limit`` it says how many more (``segkit inspect`` lists all).
        """
        if not self.problems:
            return ""
        shown = "; ".join(f"{_relative(item.file, self.root)}: {item.problem}" for item in self.problems[:limit])
        more = len(self.problems) - limit
        extra = f"; and {more} more (segkit inspect {self.root} lists them all)" if more > 0 else ""
        count = f"{len(self.problems)} problem{'s' if len(self.problems) > 1 else ''}"
        return f"{count} in {self.root}: {shown}{extra}"

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

            annotation = read_labelme(ref.label_file, self.label_map)
            image = np.asarray(annotation.image)
            mask = rasterize(annotation, self.label_to_index(), ignore_index=self.ignore_index)
            check_same_size(ref.label_file, mask.shape, image.shape)
            return Sample(image, mask, ref.name)
        image = read_image(ref.image_file)
        mask = read_mask(
            ref.label_file,
            self.encoding,
            color_table=self.color_table,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
        )
        return Sample(image, self.fitted(ref, mask, image.shape), ref.name)

    def fitted(self, ref: SampleRef, mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
        """A sample's mask as it trains and scores: at the image's size, the ignore value outside its region.

        Raises:
            SegkitError: naming the mask (or region mask) whose size differs from the image's.
        """
        mask = self.sized_like(ref.label_file, mask, image_shape)
        if ref.roi is not None:
            inside = self.sized_like(ref.roi, read_region(ref.roi), image_shape)
            mask = np.where(inside, mask, self.ignore_index).astype(np.uint8)
        return mask

    def sized_like(self, path: Path, mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
        """``mask`` at the image's size: as it is, or resized when it is a scaled copy and ``fit_masks`` is on.

        Raises:
            SegkitError: naming ``path``, when the sizes differ otherwise.
        """
        if self._fits(path, mask.shape, image_shape):
            return fit_mask(mask, image_shape)
        return mask

    def _fits(self, path: Path, mask_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> bool:
        """Whether a mask of ``mask_shape`` is to be fitted to the image (else it is of its size already).

        Raises:
            SegkitError: naming ``path``, when the sizes differ and fitting does not apply.
        """
        if self.fit_masks and mask_shape[:2] != image_shape[:2] and is_scaled_copy(mask_shape, image_shape):
            return True
        check_same_size(path, mask_shape, image_shape)
        return False

    def unusable(self) -> list[SegkitError]:
        """Every sample whose files cannot be read or do not fit together, from the file headers alone.

        One pass over the headers (nothing decoded) finds every unreadable image, mask or region
        mask and every size mismatch at once, so a user fixes them all in one go.
        """
        if self.layout == "labelme":  # their labels were read as the folder was opened
            return []
        problems = []
        for ref in self.samples:
            try:
                width, height = upright_size(ref.image_file)
                for path in filter(None, (ref.label_file, ref.roi)):
                    mask_width, mask_height = peek_image(path)[1]
                    self._fits(path, (mask_height, mask_width), (height, width))
            except SegkitError as error:
                problems.append(error)
        return problems

    def without(self, files: set[str]) -> DataSource:
        """This source without the samples any of whose ``files`` are named (kept as problems)."""
        kept = [
            ref for ref in self.samples if not files & {str(path) for path in (ref.image, ref.mask, ref.roi) if path}
        ]
        dropped = len(self.samples) - len(kept)
        problem = Problem(str(self.root), f"{dropped} samples left out (--skip-bad)")
        return dataclasses.replace(self, samples=kept, problems=[*self.problems, problem])

    def label_to_index(self) -> dict[str, int]:
        """Class name -> index (labelme's ``__ignore__`` label paints the ignore value)."""
        return {name: index for index, name in enumerate(self.classes)}


def open_source(
    path: str | Path,
    *,
    split: str | None = None,
    masks: str | None = None,
    colors: str | Path | ColorTable | None = None,
    classes: Sequence[str] | str | Path | None = None,
    ignore_index: int = 255,
    images: str | None = None,
    roi_masks: str | None = None,
    fit_masks: bool = False,
    label_map: str | Path | LabelMap | None = None,
) -> DataSource:
    """Detect a dataset folder's layout, pairs, classes and mask encoding.

    Args:
        path: dataset folder.
        split: split to use when the folder has split sub-folders or VOC ImageSets
            (default: the training split, see :func:`split_roles`).
        masks: the masks: a folder name (e.g. ``masks_rgb``, ``Ground_Truth``) or a file name
            pattern with ``{id}`` (``1st_manual/{id}_manual1.gif``), relative to the (split) folder.
        images: the images, likewise (default: ``images/``, ``image/`` or ``imgs/``).
        roi_masks: region-of-interest masks, likewise: pixels where they are 0 get the ignore value.
        fit_masks: resize a mask that is a scaled copy of its image (same aspect within 1 %) to it.
        label_map: labelme labels to classes: a ``--label-map`` file or a :class:`LabelMap`.
        colors: colour table (file or :class:`ColorTable`) for RGB colour-coded masks.
        classes: class names in index order, read by
            :func:`segkit.data.classes.read_class_list` (a list, ``"a,b,c"`` or a
            .txt/.json/.csv file). Default: class_names.txt, labels.txt, label_names.txt,
            classes.txt or classes.json in the folder (or the parent of a split folder),
            else the colour table's names, else VOC's 21 names (VOC layout and palette),
            else background/foreground for 0/255 masks, else background, class_1..class_k.
            Labelme lists get ``_background_`` first when they name no background.
        ignore_index: mask value of unlabelled pixels.

    Raises:
        SegkitError: no pairs, unknown split, RGB masks without colours, bad class list.
    """
    root = Path(path)
    if not root.is_dir():
        raise SegkitError(root, "not found" if not root.exists() else "not a folder (expected a dataset folder)")
    folder, layout, split, splits, where = _resolve_folder(root, split, _Where(images, masks, roi_masks))
    if layout == "labelme":
        rules = read_label_map(label_map) if isinstance(label_map, (str, Path)) else label_map
        return _open_labelme(folder, classes, ignore_index, split, splits, rules)
    table = colors if isinstance(colors, ColorTable) or colors is None else load_color_table(colors)
    class_file = find_class_file(folder, search_parent=folder != root)
    from_file = read_class_file(class_file, ignore_index=ignore_index) if class_file else None
    if table is None and from_file is not None and from_file.color_table is not None:
        logger.debug("using the colours of %s", class_file)
        table = from_file.color_table
    if classes is not None:
        declared: ClassList | None = read_class_list(classes, ignore_index=ignore_index)
    elif from_file is not None:
        declared = from_file
    else:
        declared = None if table is None else table_class_list(table, ignore_index)
    refs, errors = _voc_pairs(folder, split) if layout == "voc" else _folder_pairs(folder, where)
    if not refs:
        unpaired = f"; {len(errors)} files without a partner" if errors else ""
        raise SegkitError(folder, NO_PAIRS + unpaired)
    scan = scan_masks([ref.label_file for ref in refs], table, None if declared is None else len(declared.names))
    errors += scan.errors
    if scan.encoding == "binary-0-255":
        logger.info(BINARY_MESSAGE)
    elif declared is not None and scan.encoding == "index" and is_binary_0_255(scan.values):
        logger.info(
            "masks hold only 0 and 255, but %d classes are named (%s): read as values, not as 0/255 binary",
            len(declared.names),
            declared.origin,
        )
    class_list = declared or default_class_list(
        scan.encoding, scan.values, ignore_index, scan.palette if layout == "voc" else None
    )
    if class_list.origin == "values found":
        logger.info("no class names given: using %s", ", ".join(class_list.names))
    return DataSource(
        folder, layout, _checked_count(folder, class_list), ignore_index, scan.encoding, refs,
        [Problem(str(error.path), error.problem) for error in errors], table, split, splits, class_list.origin,
        fit_masks,
    )  # fmt: skip


@dataclass(frozen=True)
class _Where:
    """Where a ``folders`` dataset keeps its files: folder names or ``{id}`` patterns (``None``: the defaults)."""

    images: str | None = None
    masks: str | None = None
    roi: str | None = None

    @property
    def given(self) -> bool:
        return self.images is not None or self.masks is not None

    def image_place(self, folder: Path) -> Path | None:
        return _place(folder, self.images) if self.images is not None else _image_dir(folder)

    def mask_place(self, folder: Path) -> Path | None:
        return _place(folder, self.masks) if self.masks is not None else _first_dir(folder, MASK_DIRS)


def _place(folder: Path, name_or_pattern: str) -> Path | None:
    """The folder a ``--images``/``--masks`` value names (a pattern's folder part), if it exists."""
    if "{id}" in name_or_pattern:
        head = name_or_pattern.split("{id}")[0]
        path = folder / head.rsplit("/", 1)[0] if "/" in head else folder
    else:
        path = folder / name_or_pattern
    return path if path.is_dir() else None


def _files_by_id(folder: Path, name_or_pattern: str, problems: list[SegkitError]) -> dict[str, Path]:
    """Files of a folder name (keyed by relative path without extension) or an ``{id}`` pattern (keyed by id)."""
    if "{id}" not in name_or_pattern:
        return index_image_files(folder / name_or_pattern, problems=problems)
    if name_or_pattern.count("{id}") != 1:
        raise SegkitError(None, f"{name_or_pattern!r}: a file name pattern holds {{id}} once")
    # fnmatch-style globbing finds the candidates; one regular expression reads each one's id
    head, tail = name_or_pattern.split("{id}")
    matcher = re.compile(re.escape(head) + "(?P<id>.+?)" + re.escape(tail))
    found: dict[str, Path] = {}
    for path in glob_image_files(str(folder / (glob.escape(head) + "*" + glob.escape(tail)))):
        match = matcher.fullmatch(path.relative_to(folder).as_posix())
        if match is None:
            continue
        key = match.group("id")
        if key in found:
            problems.append(SegkitError(path, f"another file has the same id {key!r} ({found[key].name}); left out"))
        else:
            found[key] = path
    return dict(sorted(found.items()))


def _layout_of(folder: Path, where: _Where) -> str | None:
    if where.given:
        return "folders" if where.image_place(folder) and where.mask_place(folder) else None
    if (folder / "JPEGImages").is_dir() and (folder / "SegmentationClass").is_dir():
        return "voc"
    if _image_dir(folder) and _first_dir(folder, MASK_DIRS):
        return "folders"
    from segkit.data.labelme import has_labelme_files

    return "labelme" if has_labelme_files(folder) else None


def _first_dir(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_dir()), None)


def _image_dir(folder: Path) -> Path | None:
    return _first_dir(folder, IMAGE_DIRS)


def _voc_splits(folder: Path) -> list[str]:
    return sorted(path.stem for path in (folder / "ImageSets" / "Segmentation").glob("*.txt"))


def list_splits(path: str | Path, masks: str | None = None, images: str | None = None) -> list[str]:
    """The splits a dataset folder offers (VOC ImageSets, split sub-folders or split folder pairs), reading no
    image or mask."""
    root = Path(path)
    where = _Where(images, masks)
    return _splits_of(root, _layout_of(root, where), _split_places(root, where))


def _split_places(root: Path, where: _Where) -> dict[str, _Where]:
    """Splits whose images and masks are two folders of ``root``, by split name: where each one's are.

    For a split ``train``: ``train/`` + ``trainannot/`` (or ``_masks``, ``_labels`` ... :data:`MASK_SUFFIXES`),
    ``train_images/`` + ``train_masks/``, or ``images/train/`` + ``masks/train/`` (any of :data:`IMAGE_DIRS` and
    :data:`MASK_DIRS`, when the image folder holds only split folders). A split folder with a layout of its own
    (``train/images/`` + ``train/masks/``) is a split sub-folder, not listed here; ``--images``/``--masks`` given
    name the folders themselves, so nothing is looked for.
    """
    if where.given:
        return {}
    # image folders that hold split folders (images/train/), found once for every split
    nested = [images for images in IMAGE_DIRS if (root / images).is_dir() and _holds_only_folders(root / images)]
    places = {}
    for split in SPLIT_DIRS:
        found = next(
            (
                (images, masks)
                for images, masks in _pair_candidates(split, nested)
                if (root / images).is_dir() and (root / masks).is_dir()
            ),
            None,
        )
        # a split folder's own layout (which may scan its JSON files for labelme) is looked at only when a pair was found
        if found is not None and not ((root / split).is_dir() and _layout_of(root / split, _Where()) is not None):
            places[split] = _Where(*found, where.roi)
    return places


def _pair_candidates(split: str, nested: list[str]) -> list[tuple[str, str]]:
    """(image folder, mask folder) pairs that could hold ``split``, relative to the data folder, most usual first
    (``nested``: the image folders that hold split folders)."""
    beside = [f"{split}{suffix}" for suffix in MASK_SUFFIXES]
    pairs = [(split, masks) for masks in beside]
    pairs += [(f"{split}_{images}", masks) for images in IMAGE_DIRS for masks in beside]
    return pairs + [(f"{images}/{split}", f"{masks}/{split}") for images in nested for masks in MASK_DIRS]


def _holds_only_folders(folder: Path) -> bool:
    """Whether ``folder`` holds no image file of its own (only sub-folders): split folders, not a flat layout."""
    # by name alone: stat() of an entry may fail (a symbolic link loop), and a folder named like an image is rare
    with os.scandir(folder) as entries:  # closed when the first image file ends the scan
        return not any(is_image_file(Path(entry.name)) for entry in entries)


def _splits_of(root: Path, layout: str | None, places: dict[str, _Where]) -> list[str]:
    if layout == "voc":
        return _voc_splits(root)
    if layout is not None and not places:
        return []
    return [name for name in SPLIT_DIRS if name in places or (layout is None and (root / name).is_dir())]


def _resolve_folder(root: Path, split: str | None, where: _Where) -> tuple[Path, str, str | None, list[str], _Where]:
    """The data folder, its layout, the split chosen, the splits available and where the split's files are."""
    layout = _layout_of(root, where)
    places = _split_places(root, where)
    splits = _splits_of(root, layout, places)
    if layout == "voc":
        split = split or split_roles(splits).train
        if split is not None and split not in splits:
            raise SegkitError(root, f"no split {split!r} in ImageSets/Segmentation; available: {_listing(splits)}")
        return root, layout, split, splits, where
    if layout is not None and not places:
        if split is not None:
            raise SegkitError(root, f"split {split!r} requested but the folder has no split sub-folders")
        return root, layout, None, [], where
    if not splits:
        raise _no_layout_error(root, where)
    split = split or split_roles(splits).train or "train"
    if split not in splits:
        raise SegkitError(root, f"no split {split!r}; available splits: {_listing(splits)}")
    if split in places:
        return root, "folders", split, splits, places[split]
    layout = _layout_of(root / split, where)
    if layout is None:
        raise _no_layout_error(root / split, where)
    return root / split, layout, split, splits, where


def _no_layout_error(folder: Path, where: _Where) -> SegkitError:
    if where.images is not None and where.image_place(folder) is None:
        return SegkitError(folder / where.images, "images not found (--images names a folder or an {id} pattern)")
    if where.masks is not None and where.image_place(folder) is not None:
        return SegkitError(folder / where.masks, "masks not found (--masks names a folder or an {id} pattern)")
    return SegkitError(folder, NO_PAIRS)


def _listing(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def _folder_pairs(folder: Path, where: _Where) -> tuple[list[SampleRef], list[SegkitError]]:
    problems: list[SegkitError] = []
    image_dir, mask_dir = where.image_place(folder), where.mask_place(folder)
    if image_dir is None or mask_dir is None:
        raise SegkitError(folder, f"no image folder ({'/'.join(IMAGE_DIRS)}) or no mask folder")
    images = _files_by_id(folder, where.images or image_dir.name, problems)
    mask_files = _files_by_id(folder, where.masks or mask_dir.name, problems)
    regions = None
    if where.roi is not None:
        regions = _files_by_id(folder, where.roi, problems)
        if not regions:
            raise SegkitError(folder / where.roi.split("{id}")[0], "no region-of-interest masks found (--roi-masks)")
    problems += [SegkitError(images[name], "image without mask") for name in images if name not in mask_files]
    problems += [SegkitError(mask_files[name], "mask without image") for name in mask_files if name not in images]
    paired = [name for name in images if name in mask_files]
    if not paired and "{id}" not in f"{where.images}{where.masks}":
        hint = _pattern_hint(folder, images, where.images or image_dir.name, mask_files, where.masks or mask_dir.name)
        if hint:
            raise SegkitError(folder, f"{NO_PAIRS}; images and masks are named differently: {hint}")
    if regions is not None:
        problems += [
            SegkitError(images[name], "image without region mask (--roi-masks); left out")
            for name in paired
            if name not in regions
        ]
        paired = [name for name in paired if name in regions]
    refs = [SampleRef(name, images[name], mask_files[name], roi=regions[name] if regions else None) for name in paired]
    return refs, problems


def _pattern_hint(
    folder: Path, images: dict[str, Path], image_folder: str, masks: dict[str, Path], mask_folder: str
) -> str:
    """``--images``/``--masks`` patterns that pair files whose names differ by a fixed ending, or ``""``.

    Every folder beside the mask folder is tried too, and each that pairs is named: only a hint in
    the error, never applied, since a folder of other masks (DRIVE's field-of-view ``mask/`` beside
    its labels in ``1st_manual/``) pairs by ending as well as the labels do.
    """
    if not images or any("/" in key for key in images):
        return ""
    image_end = _shared_ending(list(images))
    ids = {key.removesuffix(image_end) for key in images}
    beside = (folder / mask_folder).parent
    taken = {(folder / mask_folder).resolve(), (folder / image_folder).resolve()}
    others = sorted(
        Path(os.path.relpath(path, folder)).as_posix()
        for path in beside.iterdir()
        if path.is_dir() and not path.name.startswith(".") and path.resolve() not in taken
    )
    found = []
    for candidate in [mask_folder, *others]:
        files = masks if candidate == mask_folder else index_image_files(folder / candidate)
        if files and not any("/" in key for key in files):
            ending = _shared_ending(list(files))
            paired = ids & {key.removesuffix(ending) for key in files}
            if paired:
                found.append(
                    (len(paired), f"{_pattern(candidate, ending, files)} ({len(paired)} of {len(images)} images)")
                )
    if not found:
        return ""
    listed = ", ".join(text for _, text in sorted(found, key=lambda item: -item[0]))
    return f"with --images {_pattern(image_folder, image_end, images)}, these --masks pair them: {listed}"


def _pattern(folder: str, ending: str, files: dict[str, Path]) -> str:
    """An ``{id}`` pattern for ``files`` of ``folder`` whose names all end in ``ending`` (the usual extension)."""
    extension = Counter(path.suffix for path in files.values()).most_common(1)[0][0]
    return f"'{folder}/{{id}}{ending}{extension}'"


def _shared_ending(names: list[str]) -> str:
    """The longest ending every name shares that starts at a separator (``_-. ``) and leaves each a non-empty id."""
    shared = os.path.commonprefix([name[::-1] for name in names])[::-1]
    shortest = min(len(name) for name in names)
    return next((shared[i:] for i in range(len(shared)) if shared[i] in "_-. " and len(shared) - i < shortest), "")


def _voc_pairs(folder: Path, split: str | None) -> tuple[list[SampleRef], list[SegkitError]]:
    problems: list[SegkitError] = []
    images = index_image_files(folder / "JPEGImages", problems=problems)
    mask_files = index_image_files(folder / "SegmentationClass", problems=problems)
    problems += [SegkitError(mask_files[name], "mask without image") for name in mask_files if name not in images]
    if split is None:  # JPEGImages also holds detection-only images: no mask is normal there
        names = sorted(name for name in mask_files if name in images)
    else:
        list_file = folder / "ImageSets" / "Segmentation" / f"{split}.txt"
        lines = read_text(list_file, "split list").splitlines()
        listed = [line.split()[0] for line in lines if line.strip()]
        for name in listed:
            if name not in images:
                problems.append(SegkitError(list_file, f"{name} is listed but has no image in JPEGImages/"))
            elif name not in mask_files:
                problems.append(SegkitError(images[name], f"image without mask (listed in {list_file.name})"))
        names = sorted(name for name in set(listed) if name in images and name in mask_files)
    return [SampleRef(name, images[name], mask_files[name]) for name in names], problems


def _checked_count(folder: Path, class_list: ClassList) -> list[str]:
    if len(class_list.names) < 2:
        raise SegkitError(
            class_list.path or folder,
            f"need at least 2 classes, got {class_list.names} (from {class_list.origin}); "
            "list every class in index order, class 0 first",
        )
    return class_list.names


def _relative(file: str, root: Path) -> str:
    """``file`` relative to ``root`` when it lies inside it, for short messages."""
    try:
        return os.path.relpath(file, root) if Path(file).is_relative_to(root) else file
    except ValueError:  # another drive (Windows)
        return file


def _open_labelme(
    folder: Path,
    classes: Sequence[str] | str | Path | None,
    ignore_index: int,
    split: str | None,
    splits: list[str],
    label_map: LabelMap | None,
) -> DataSource:
    """A labelme folder: every annotation's labels are counted once (through ``label_map``) for the class list."""
    from segkit.data.labelme import count_labels, find_labelme_files, labels_in_class_order

    errors: list[SegkitError] = []
    first_files: dict[str, Path] = {}
    json_paths, counts = count_labels(find_labelme_files(folder, errors), errors, label_map, first_files)
    class_file = find_class_file(folder, search_parent=True, names=LABELME_CLASS_FILES)
    if classes is not None:
        class_list = with_background_first(read_class_list(classes, ignore_index=ignore_index))
    elif class_file is not None:
        class_list = with_background_first(read_class_file(class_file, ignore_index=ignore_index))
    else:
        class_list = ClassList(labels_in_class_order(counts), "labels found")
    if not json_paths:
        raise SegkitError(folder, NO_PAIRS)
    check_known_labels(counts, [*class_list.names, IGNORE_LABEL], class_list.origin, first_files, folder)
    if label_map is None and instance_groups(counts):
        logger.warning(
            "labels look numbered per object (%s), and each is a class; segkit inspect %s suggests a --label-map",
            describe_groups(counts),
            folder,
        )
    refs = [SampleRef(path.stem, None, None, path) for path in json_paths]
    problems = [Problem(str(error.path), error.problem) for error in errors]
    return DataSource(
        folder, "labelme", _checked_count(folder, class_list), ignore_index, "labelme", refs, problems, None,
        split, splits, class_list.origin, label_map=label_map,
    )  # fmt: skip


def usable(source: DataSource, skip_bad: bool = False) -> DataSource:
    """``source`` once every sample's files were checked from their headers (:meth:`DataSource.unusable`).

    Raises:
        SegkitError: naming the first unusable file, how many there are and the next few, and
            ``--skip-bad`` (unless ``skip_bad``: then they are left out, with a count said once).
    """
    bad = source.unusable()
    if not bad:
        return source
    if skip_bad:
        logger.warning("--skip-bad: %d of %d samples left out (%s ...)", len(bad), len(source), bad[0])
        return source.without({str(error.path) for error in bad})
    more = "; ".join(f"{_relative(str(error.path), source.root)}: {error.problem}" for error in bad[1:4])
    others = f"; {len(bad) - 1} more: {more}" + (" ..." if len(bad) > 4 else "") if len(bad) > 1 else ""
    raise SegkitError(
        bad[0].path,
        f"{bad[0].problem}{others}; fix {'them' if len(bad) > 1 else 'it'} (segkit inspect lists every one), "
        "or --skip-bad leaves such samples out",
    )


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
