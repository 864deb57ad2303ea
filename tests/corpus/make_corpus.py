"""Generate segkit's hostile-input corpus: bad and odd files, each with the outcome every command must give.

Usage::

    python tests/corpus/make_corpus.py OUT_DIR [ENTRY ...]

writes one folder per entry (``OUT_DIR/<entry>/``) and ``OUT_DIR/manifest.json``
(entry -> command -> expected outcome). The files are generated, never committed:
the tests run :func:`generate` into a temporary folder once per session.

An entry's folder holds what each command is fed:

- ``predict/``: images for ``segkit predict`` (a good ``000_ok.png`` first, so an
  error after it proves that nothing is written unless every image succeeds);
- ``data/``: an ``images/`` + ``masks/`` dataset (two good pairs and the odd one) for
  ``segkit inspect``, ``segkit train`` and ``segkit evaluate CHECKPOINT DATA``;
- ``labelme/``: labelme JSON files, their images and a ``labels.txt`` for
  ``segkit convert labelme`` (labelme entries are also the dataset the other commands read);
- ``pred/``: predicted masks for ``segkit evaluate --pred pred --true data/masks``;
- the server gets the file named by :attr:`Entry.upload`.

Outcomes (:class:`Outcome`): ``ok`` (exit 0, output checked), ``error`` (exit 2, one
line ``segkit: error: ...`` naming the file, nothing written), ``problem`` (inspect:
exit 0 and the file listed in ``problems``), ``http`` (the server's status code).

Everything is built with numpy, Pillow (OpenCV for the 48-bit PNG, which Pillow
cannot write) and the standard library; hostile bytes (truncated files, lying
headers, a PNG bomb) are written by hand because no library produces broken files
on purpose.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("background", "cat", "dog")
HEIGHT, WIDTH = 24, 32  # the ordinary images, stored size
GOOD_STEMS = ("000_ok", "001_ok")  # good pairs placed before every odd file (names sort first)
ORIENTATION_TAG = 0x0112  # EXIF Orientation
BOMB_SIDE = 30_000  # 30000 x 30000 pixels in a ~110 KB PNG
NON_UTF8_NAME = b"caf\xe9.png"  # Latin-1 e-acute: not valid UTF-8

COMMANDS = ("convert", "inspect", "train", "predict", "evaluate", "evaluate-folders", "serve")


class Unsupported(Exception):
    """This file system cannot hold the entry (e.g. a non-UTF-8 file name); its tests are skipped."""


# ----------------------------------------------------------------------------- outcomes
@dataclass(frozen=True)
class Outcome:
    """What one command must do with an entry.

    Attributes:
        kind: ``ok``, ``error``, ``problem`` or ``http``.
        name: for ``error``/``problem``: text the message must contain (the offending
            file's name, or the end of its path such as ``pred/odd.png``).
        status: for ``http``: the status code.
    """

    kind: str
    name: str = ""
    status: int = 200

    def describe(self) -> str:
        if self.kind == "http":
            return str(self.status)
        return f"{self.kind} {self.name}".strip()


OK = Outcome("ok")


def error(name: str) -> Outcome:
    return Outcome("error", name)


def problem(name: str) -> Outcome:
    return Outcome("problem", name)


def http(status: int) -> Outcome:
    return Outcome("http", status=status)


# ------------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class Entry:
    """One corpus entry: how to build it, and the outcome each command must give.

    Attributes:
        name: folder name and test id.
        build: writes the entry's files into its (empty) folder.
        expect: command (see :data:`COMMANDS`) -> outcome; commands not listed are not fed it.
        sizes: stem -> displayed ``(width, height)`` of every mask a successful
            ``predict`` or ``convert`` must write.
        pairs: readable image/mask pairs in ``data`` (what inspect and evaluate must count).
        predict_inputs: ``segkit predict`` INPUT arguments, relative to the entry folder.
        data: dataset folder for inspect, train and evaluate.
        labelme: source folder for ``convert labelme``.
        pred, true: predicted and true mask folders of ``evaluate --pred PRED --true TRUE``.
        upload: file posted to the server; ``upload_type`` its content type.
        report: values ``segkit inspect --json`` must report when it succeeds (e.g. the encoding).
        eval_pairs: images ``segkit evaluate CHECKPOINT DATA`` must score, when not ``pairs``
            (a split dataset is scored on its validation split).
        val_pairs: images ``segkit train`` must validate on (its metrics.json), when it matters.
    """

    name: str
    build: Callable[[Path], None]
    expect: dict[str, Outcome]
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    pairs: int = 3
    predict_inputs: tuple[str, ...] = ("predict",)
    data: str = "data"
    labelme: str = "labelme"
    pred: str = "pred"
    true: str = "data/masks"
    upload: str = ""
    upload_type: str = "application/octet-stream"
    report: dict[str, object] = field(default_factory=dict)
    eval_pairs: int | None = None
    val_pairs: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.expect) - set(COMMANDS)
        if unknown:
            raise ValueError(f"entry {self.name}: unknown commands {sorted(unknown)}; known: {COMMANDS}")
        if ("serve" in self.expect) != bool(self.upload):
            raise ValueError(f"entry {self.name}: a server outcome needs an upload, and an upload a server outcome")


# --------------------------------------------------------------------------- pixel data
def sample_rgb(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """Gradients, a bright disk and noise: an image a random model still sees structure in."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([cols * 255 / (width - 1), rows * 255 / (height - 1), np.full((height, width), 90.0)], axis=2)
    disk = (rows - height / 2) ** 2 + (cols - width / 3) ** 2 < (min(height, width) / 4) ** 2
    image[disk] = (250, 240, 30)
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def sample_mask(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Class 0 background, a class-1 block on the left, a class-2 block on the right."""
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, : width // 3] = 1
    mask[height // 4 : 3 * height // 4, 2 * width // 3 :] = 2
    return mask


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_rgb() -> bytes:
    return encode(sample_rgb(seed=1))


def jpeg_rgb() -> bytes:
    return encode(sample_rgb(seed=2), "JPEG", quality=90)


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(sample_rgb(seed=3)).convert("CMYK"), "JPEG", quality=90)


def rgba_png() -> bytes:
    rgba = np.dstack([sample_rgb(seed=4), np.tile(np.linspace(0, 255, WIDTH, dtype=np.uint8), (HEIGHT, 1))])
    return encode(Image.fromarray(rgba, "RGBA"))


def gray_png() -> bytes:
    return encode(Image.fromarray(sample_rgb(seed=5)).convert("L"))


def palette_png() -> bytes:
    """P mode with a transparent palette entry (composited over white when read)."""
    image = Image.fromarray(sample_rgb(seed=6)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, transparency=0)


def i16_png() -> bytes:
    """A 16-bit grayscale PNG (Pillow mode I;16), values spread over 0..65535."""
    values = sample_rgb(seed=7)[..., 0].astype(np.uint16) * 257
    return encode(Image.fromarray(values))


def exif_jpeg(orientation: int) -> Callable[[], bytes]:
    """A JPEG stored WIDTH x HEIGHT whose EXIF says to rotate it (6: 90 deg clockwise, 8: counter-clockwise)."""

    def build() -> bytes:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        return encode(sample_rgb(seed=8), "JPEG", quality=90, exif=exif.tobytes())

    return build


def zero_bytes() -> bytes:
    return b""


def truncated(make: Callable[[], bytes]) -> Callable[[], bytes]:
    """The first half of a valid file: the header parses, the pixel data ends early."""

    def build() -> bytes:
        data = make()
        return data[: len(data) // 2]

    return build


def png_corrupt_idat() -> bytes:
    """A complete PNG whose compressed pixel data (IDAT) is scrambled: zlib refuses it."""
    data = bytearray(png_rgb())
    start = data.index(b"IDAT") + 30
    for index in range(start, start + 8):
        data[index] ^= 0xA5
    return bytes(data)


def rgb48_png() -> bytes:
    """A 16-bit-per-channel RGB PNG (OpenCV writes these; Pillow cannot)."""
    import cv2

    ok, encoded = cv2.imencode(".png", sample_rgb(seed=11).astype(np.uint16) * 257)
    assert ok
    return encoded.tobytes()


def float_tiff() -> bytes:
    """A 32-bit float grayscale TIFF (Pillow mode F), values in 0..1."""
    return encode(Image.fromarray(sample_rgb(seed=12)[..., 1].astype(np.float32) / 255), "TIFF")


def jpeg_bad_header() -> bytes:
    """A JPEG whose frame header (SOF0) is overwritten: it cannot even be identified."""
    data = bytearray(jpeg_rgb())
    start = data.index(b"\xff\xc0")
    data[start : start + 12] = b"\x00" * 12
    return bytes(data)


def jpeg_bad_scan() -> bytes:
    """A JPEG with garbage in its entropy-coded data: libjpeg decodes it (wrong pixels, right size)."""
    data = bytearray(jpeg_rgb())
    scan = data.index(b"\xff\xda") + 20
    for index in range(scan, scan + 24):
        data[index] ^= 0x5A
    return bytes(data)


def text_file() -> bytes:
    return b"these are notes, not pixels\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def png_bomb(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit PNG of zeros: 30000 x 30000 is ~110 KB on disk, 900 megapixels decoded.

    Written chunk by chunk because Pillow would have to hold the whole image to save it.
    """
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def huge_gif() -> bytes:
    """A 2x2 GIF whose logical screen claims 65535 x 65535 pixels."""
    data = bytearray(encode(Image.new("P", (2, 2)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def upload_over_limit() -> bytes:
    """1.5 MiB of noise behind a PNG signature: over the test server's 1 MiB limit."""
    return b"\x89PNG\r\n\x1a\n" + np.random.default_rng(9).bytes(3 * 2**19)


# ------------------------------------------------------------------------ file writers
def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_png(path: Path, array: np.ndarray) -> None:
    write(path, encode(array))


def fs_name(name: str | bytes) -> str:
    """A file name as Python spells it; bytes that are not UTF-8 become surrogates (PEP 383)."""
    return os.fsdecode(name)


def check_fs_name(folder: Path, name: str) -> None:
    """Raise :class:`Unsupported` when ``folder``'s file system refuses the name."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / name).touch()
        (folder / name).unlink()
    except (OSError, UnicodeEncodeError) as reason:
        raise Unsupported(f"file name {name!r} not allowed here ({reason})") from None


def write_classes(folder: Path) -> None:
    write(folder / "class_names.txt", ("\n".join(CLASSES) + "\n").encode())


def write_good_pairs(data: Path) -> None:
    for number, stem in enumerate(GOOD_STEMS):
        write_png(data / "images" / f"{stem}.png", sample_rgb(seed=10 + number))
        write_png(data / "masks" / f"{stem}.png", sample_mask())
    write_classes(data)


def labelme_json(image_path: str, width: int, height: int, shapes: list[dict] | None = None, **extra: object) -> bytes:
    """A labelme 5 annotation: by default a cat polygon and a dog rectangle inside the image."""
    if shapes is None:
        shapes = [
            {"label": "cat", "points": [[1, 1], [width / 3, 2], [2, height - 2]], "shape_type": "polygon"},
            {"label": "dog", "points": [[width / 2, height / 4], [width - 2, height - 3]], "shape_type": "rectangle"},
        ]
    document = {
        "version": "5.4.1",
        "flags": {},
        "shapes": [{"group_id": None, "flags": {}, **s} for s in shapes],
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
        **extra,
    }
    return json.dumps(document, indent=1).encode()


def write_good_labelme(folder: Path) -> None:
    """One good annotation, and labelme's labels.txt naming the classes as the checkpoint does."""
    write(folder / "labels.txt", ("__ignore__\n" + "\n".join(CLASSES) + "\n").encode())
    write(folder / "000_ok.png", png_rgb())
    write(folder / "000_ok.json", labelme_json("000_ok.png", WIDTH, HEIGHT))


# ------------------------------------------------------------------- entry constructors
# ------------------------------------------------------------------- entry constructors
SIZE = (WIDTH, HEIGHT)  # displayed (width, height) of the ordinary images
ROTATED = (HEIGHT, WIDTH)  # displayed (width, height) of the EXIF-rotated JPEGs
Builder = Callable[[Path], None]
PixelsOrBytes = Callable[[], np.ndarray | bytes]


def image_builder(name: str | bytes, make: Callable[[], bytes], displayed: tuple[int, int]) -> Builder:
    """Put one image file in every place a command reads images from (with a mask / annotation of its size)."""

    def build(root: Path) -> None:
        file_name = fs_name(name)
        stem = Path(file_name).stem
        check_fs_name(root, file_name)
        data = make()
        width, height = displayed
        write(root / "predict" / "000_ok.png", png_rgb())
        write(root / "predict" / file_name, data)
        write_good_pairs(root / "data")
        write(root / "data" / "images" / file_name, data)
        write_png(root / "data" / "masks" / f"{stem}.png", sample_mask(height, width))
        write_good_labelme(root / "labelme")
        write(root / "labelme" / file_name, data)
        write(root / "labelme" / f"{stem}.json", labelme_json(file_name, width, height))

    return build


def good_image(entry: str, name: str | bytes, make: Callable[[], bytes], displayed: tuple[int, int] = SIZE) -> Entry:
    """An odd but valid image: every command succeeds and every mask has the displayed size."""
    expect = {command: OK for command in ("convert", "inspect", "train", "predict", "evaluate")}
    return Entry(
        entry,
        image_builder(name, make, displayed),
        {**expect, "serve": http(200)},
        sizes={"000_ok": SIZE, Path(fs_name(name)).stem: displayed},
        upload=f"predict/{fs_name(name)}",
    )


def bad_image(entry: str, name: str | bytes, make: Callable[[], bytes], status: int = 400) -> Entry:
    """An unreadable image: errors naming it, inspect lists it, the server answers ``status``."""
    shown = fs_name(name)
    expect = {command: error(shown) for command in ("convert", "train", "predict", "evaluate")}
    return Entry(
        entry,
        image_builder(name, make, SIZE),
        {**expect, "inspect": problem(shown), "serve": http(status)},
        upload=f"predict/{shown}",
    )


def dataset_with_mask(mask: PixelsOrBytes, pred_size: tuple[int, int] = SIZE) -> Builder:
    """Two good pairs and ``odd``, whose mask is ``mask()`` (pixels, written as PNG, or raw bytes).

    ``pred/`` holds a prediction per pair (the true mask; ``odd``'s at ``pred_size``).
    """

    def build(root: Path) -> None:
        data = root / "data"
        write_good_pairs(data)
        write_png(data / "images" / "odd.png", sample_rgb(seed=20))
        value = mask()
        write(data / "masks" / "odd.png", value if isinstance(value, bytes) else encode(value))
        for stem in GOOD_STEMS:
            write_png(root / "pred" / f"{stem}.png", sample_mask())
        width, height = pred_size
        write_png(root / "pred" / "odd.png", sample_mask(height, width))

    return build


def mask_entry(
    entry: str,
    mask: PixelsOrBytes,
    valid: bool,
    folders: Outcome | None = None,
    pred_size: tuple[int, int] = SIZE,
    then: Builder | None = None,
) -> Entry:
    """A dataset with one odd mask: inspect, train and evaluate succeed when ``valid``, else name the mask.

    ``folders`` is the outcome of ``evaluate --pred --true``; ``then`` rewrites the built dataset.
    """
    build = dataset_with_mask(mask, pred_size)
    if then is not None:
        build = chain(build, then)
    odd = "masks/odd.png"
    expect = (
        {"inspect": OK, "train": OK, "evaluate": OK}
        if valid
        else {"inspect": problem(odd), "train": error(odd), "evaluate": error(odd)}
    )
    return Entry(entry, build, expect if folders is None else {**expect, "evaluate-folders": folders})


def chain(*builders: Builder) -> Builder:
    def build(root: Path) -> None:
        for builder in builders:
            builder(root)

    return build


def as_rgb_masks(unknown_colour: bool) -> Builder:
    """Rewrite the dataset's masks as RGB colour codes, described by a classes.json colour table."""
    colours = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0)], np.uint8)

    def build(root: Path) -> None:
        data = root / "data"
        (data / "class_names.txt").unlink()
        table = {"classes": [{"name": name, "rgb": rgb.tolist()} for name, rgb in zip(CLASSES, colours)]}
        write(data / "classes.json", json.dumps(table).encode())
        for path in (data / "masks").iterdir():
            rgb = colours[np.asarray(Image.open(path)).clip(0, 2)]
            if unknown_colour and path.stem == "odd":
                rgb[:3, :3] = (0, 0, 255)
            write_png(path, rgb)

    return build


def i16_mask(values: Sequence[int]) -> PixelsOrBytes:
    """A 16-bit (I;16) mask holding ``values[k]`` where the ordinary mask holds class k."""

    def make() -> np.ndarray:
        labels = sample_mask()
        return np.asarray(values, dtype=np.uint16)[labels]

    return make


def out_of_range_mask() -> np.ndarray:
    mask = sample_mask()
    mask[0, :4] = 7
    return mask


def size_mismatch_mask() -> np.ndarray:
    return sample_mask(HEIGHT - 4, WIDTH - 2)


def colourful_mask() -> np.ndarray:
    return np.dstack([sample_mask() * 100, sample_mask() * 50, np.zeros((HEIGHT, WIDTH), np.uint8)])


def mask_png() -> bytes:
    return encode(sample_mask())


def labelme_entry(entry: str, file_name: str, content: Callable[[], bytes], with_image: bool = False) -> Entry:
    """A labelme folder with one bad annotation (beside ``odd.png`` when ``with_image``).

    convert, train and evaluate fail naming it; inspect lists it.
    """

    def build(root: Path) -> None:
        folder = root / "labelme"
        write_good_labelme(folder)
        if with_image:
            write(folder / "odd.png", png_rgb())
        write(folder / file_name, content())

    expect = {command: error(file_name) for command in ("convert", "train", "evaluate")}
    return Entry(entry, build, {**expect, "inspect": problem(file_name)}, data="labelme")


def json_missing_image() -> bytes:
    return labelme_json("gone.jpg", WIDTH, HEIGHT)


def json_bad_base64() -> bytes:
    return labelme_json("", WIDTH, HEIGHT, imageData="%%% not base64 %%%")


def json_cut_short() -> bytes:
    return b'{"version": "5.4.1", "shapes": [{"label": "cat", '


def json_latin1() -> bytes:
    """A label written in Latin-1, so the file is not UTF-8 (JSON must be)."""
    return labelme_json("odd.png", WIDTH, HEIGHT).replace(b'"cat"', b'"chat \xe9"')


def json_two_point_polygon() -> bytes:
    shape = {"label": "cat", "points": [[1, 1], [10, 2]], "shape_type": "polygon"}
    return labelme_json("odd.png", WIDTH, HEIGHT, shapes=[shape])


def json_nan_point() -> bytes:
    """A polygon point whose x is NaN (Python's json reads the bare word NaN)."""
    shape = {"label": "cat", "points": [[0.125, 1], [10, 2], [3, 9]], "shape_type": "polygon"}
    return labelme_json("odd.png", WIDTH, HEIGHT, shapes=[shape]).replace(b"0.125", b"NaN")


def json_bomb_imagedata() -> bytes:
    return labelme_json("", WIDTH, HEIGHT, imageData=base64.b64encode(png_bomb()).decode())


def labelme_exif_embedded(root: Path) -> None:
    """An EXIF-rotated JPEG embedded as imageData (labelme's own way of storing images)."""
    folder = root / "labelme"
    write_good_labelme(folder)
    data = base64.b64encode(exif_jpeg(6)()).decode()
    write(folder / "rotated.json", labelme_json("rotated.jpg", *ROTATED, imageData=data))


def folder_entry(entry: str, build: Builder, folder: str, outcomes: dict[str, Outcome]) -> Entry:
    """Every command pointed at the one folder ``build`` makes."""
    return Entry(
        entry, build, outcomes, predict_inputs=(folder,), data=folder, labelme=folder, pred=folder, true=folder
    )


def empty_folder(root: Path) -> None:
    (root / "empty").mkdir()


def no_pairs(root: Path) -> None:
    write_png(root / "data" / "images" / "a.png", sample_rgb())
    write_png(root / "data" / "masks" / "b.png", sample_mask())
    write_classes(root / "data")


def good_files(root: Path) -> None:
    """000_ok (and the dataset's 001_ok) in every input folder."""
    image_builder("000_ok.png", png_rgb, SIZE)(root)


def dangling_symlinks(root: Path) -> None:
    """Links to files that do not exist, beside good files, and an annotation of one of them."""
    good_files(root)
    for folder in ("predict", "data/images", "data/masks", "labelme"):
        (root / folder / "gone.png").symlink_to("missing-target.png")
    write(root / "labelme" / "gone.json", labelme_json("gone.png", WIDTH, HEIGHT))


def symlink_loops(root: Path) -> None:
    """A link to itself and a link to the folder holding it, beside good files."""
    good_files(root)
    for folder in ("predict", "data/images", "data/masks", "labelme"):
        (root / folder / "loop.png").symlink_to("loop.png")
        (root / folder / "cycle").symlink_to(".")


def folders_named_png(root: Path) -> None:
    good_files(root)
    for folder in ("predict", "data/images", "data/masks"):
        (root / folder / "folder.png").mkdir()


def text_upload(root: Path) -> None:
    write(root / "notes.txt", text_file())


def big_upload(root: Path) -> None:
    write(root / "big.png", upload_over_limit())


# ------------------------------------------------------------- class lists, pairing, splits
DATA_COMMANDS = ("inspect", "train", "evaluate")  # the commands that open data/ as a dataset


def with_class_file(name: str, content: bytes) -> Builder:
    """The good pairs with ``content`` as the dataset's class file ``name`` (instead of class_names.txt)."""

    def build(root: Path) -> None:
        write_good_pairs(root / "data")
        (root / "data" / "class_names.txt").unlink()
        write(root / "data" / name, content)

    return build


def class_file_entry(entry: str, name: str, content: bytes | str, ok: bool, report: dict | None = None) -> Entry:
    """A dataset whose class file is odd: every command reads the same list, or names the file."""
    data = content.encode() if isinstance(content, str) else content
    expect = {command: OK if ok else error(name) for command in DATA_COMMANDS}
    return Entry(entry, with_class_file(name, data), expect, pairs=2, report=report or {})


def deep_json(depth: int = 200_000) -> str:
    return '{"classes": ' + "[" * depth + "]" * depth + "}"


def binary_masks(class_file: bool) -> Builder:
    """Three pairs whose masks hold only 0 and 255; with or without a 3-class class_names.txt."""

    def build(root: Path) -> None:
        data = root / "data"
        for number in range(3):
            write_png(data / "images" / f"{number:03d}.png", sample_rgb(seed=40 + number))
            write_png(data / "masks" / f"{number:03d}.png", (sample_mask() > 0).astype(np.uint8) * 255)
        if class_file:
            write_classes(data)

    return build


def png_header_bomb(color_type: int, width: int = 20_000, height: int = 10_000) -> bytes:
    """A PNG whose header announces 200 megapixels (Pillow refuses it on opening), with a token IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    idat = zlib.compress(bytes(64))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def replace_odd_mask(data: bytes) -> Builder:
    def build(root: Path) -> None:
        write(root / "data" / "masks" / "odd.png", data)

    return build


def palette_mask_out_of_range() -> bytes:
    mask = sample_mask()
    mask[0, :3] = 9
    image = Image.fromarray(mask, "P")
    image.putpalette([value for index in range(256) for value in (index, index, index)])
    return encode(image)


def mode_mask(mode: str) -> Callable[[], bytes]:
    """The ordinary mask stored in another mode (LA: with alpha, RGBA: grey, 1: only 0/1)."""

    def make() -> bytes:
        mask = sample_mask()
        if mode == "1":
            return encode(Image.fromarray(mask > 0).convert("1"))
        return encode(Image.fromarray(mask).convert(mode))

    return make


def unpaired(kind: str) -> Builder:
    """Good pairs plus an image without a mask, a mask without an image, or one name twice."""

    def build(root: Path) -> None:
        data = root / "data"
        write_good_pairs(data)
        if kind in ("image", "twice"):
            write_png(data / "images" / "lonely.png", sample_rgb(seed=50))
        if kind in ("mask", "twice"):
            write_png(data / "masks" / "orphan.png", sample_mask())
        if kind == "twice":
            write_png(data / "images" / "000_ok.bmp", sample_rgb(seed=51))  # sorts first: 000_ok.png is left out
        if kind == "hidden":
            write_png(data / "images" / ".odd.png", sample_rgb(seed=52))
            write(data / "masks" / ".odd.png", b"not even an image")

    return build


def split_dataset(*splits: tuple[str, int]) -> Builder:
    """``data/<split>/images + masks`` with the given number of pairs each, class_names.txt at the top."""

    def build(root: Path) -> None:
        data = root / "data"
        for split, count in splits:
            for number in range(count):
                write_png(data / split / "images" / f"{split}{number}.png", sample_rgb(seed=60 + number))
                write_png(data / split / "masks" / f"{split}{number}.png", sample_mask())
        write_classes(data)

    return build


def voc_dataset(list_bytes: bytes | None = None) -> Builder:
    """A VOC folder (JPEGImages, SegmentationClass palette PNGs, ImageSets/Segmentation/{train,val}.txt)."""
    from segkit.visualize import PALETTE

    def build(root: Path) -> None:
        data = root / "data"
        names = ["2007_000001", "2007_000002", "2007_000003", "2007_000004"]
        for number, name in enumerate(names):
            write(data / "JPEGImages" / f"{name}.jpg", encode(sample_rgb(seed=70 + number), "JPEG", quality=90))
            mask = Image.fromarray(sample_mask(), "P")
            mask.putpalette(PALETTE.reshape(-1).tolist())
            write(data / "SegmentationClass" / f"{name}.png", encode(mask))
        lists = data / "ImageSets" / "Segmentation"
        for split, chosen in (("train", names[:2]), ("val", names[2:])):
            text = ("\n".join(chosen) + "\n").encode()
            write(lists / f"{split}.txt", text if list_bytes is None else text + list_bytes)
        write_classes(data)

    return build


def labelme_with(name: str, document: Callable[[], bytes], extra: Builder | None = None) -> Builder:
    """The good labelme folder (000_ok, 001_ok) plus ``name`` holding ``document()``."""

    def build(root: Path) -> None:
        folder = root / "labelme"
        write_good_labelme(folder)
        write(folder / "001_ok.png", png_rgb())
        write(folder / "001_ok.json", labelme_json("001_ok.png", WIDTH, HEIGHT))
        write(folder / "odd.png", png_rgb())
        write(folder / name, document())
        if extra is not None:
            extra(folder)

    return build


def odd_label_json(label: object) -> Callable[[], bytes]:
    def make() -> bytes:
        shape = {"label": label, "points": [[1, 1], [9, 9]], "shape_type": "rectangle"}
        cat = {"label": "cat", "points": [[10, 1], [12, 9]], "shape_type": "rectangle"}
        dog = {"label": "dog", "points": [[20, 1], [22, 9]], "shape_type": "rectangle"}
        return labelme_json("odd.png", WIDTH, HEIGHT, shapes=[cat, dog, shape])

    return make


def labelme_shape_json(shape: dict) -> Callable[[], bytes]:
    return lambda: labelme_json("odd.png", WIDTH, HEIGHT, shapes=[shape])


def far_mask_shape() -> bytes:
    crop = base64.b64encode(encode(np.full((4, 4), 255, np.uint8))).decode()
    far = {"label": "cat", "points": [[1e30, 1e30], [1e30 + 3, 1e30 + 3]], "shape_type": "mask", "mask": crop}
    near = {"label": "dog", "points": [[2, 2], [5, 5]], "shape_type": "mask", "mask": crop}
    return labelme_json("odd.png", WIDTH, HEIGHT, shapes=[far, near])


def deep_labelme() -> bytes:
    depth = 200_000
    return ('{"version": "5.4.1", "shapes": [], "flags": ' + "[" * depth + "]" * depth + "}").encode()


def utf16_labelme() -> bytes:
    return labelme_json("odd.png", WIDTH, HEIGHT).decode().encode("utf-16")


def case_twin(folder: Path) -> None:
    """``001_OK.JSON`` beside ``001_ok.json``: both would write masks/001_ok.png on a case-blind disk."""
    write(folder / "001_OK.JSON", (folder / "001_ok.json").read_bytes())


def coco_beside(folder: Path) -> None:
    write(folder / "instances.json", b'{"images": [], "annotations": [], "categories": []}')


def misplaced_background(folder: Path) -> None:
    write(folder / "labels.txt", b"__ignore__\ncat\n_background_\ndog\n")


def labelme_case(entry: str, name: str, document: Callable[[], bytes], ok: bool, extra: Builder | None = None,
                 culprit: str = "", pairs: int = 3) -> Entry:  # fmt: skip
    """A labelme folder with one odd annotation; ``culprit`` is the file the errors name (default ``name``)."""
    shown = culprit or name
    commands = ("convert", "train", "evaluate")
    expect = {c: OK for c in (*commands, "inspect")} if ok else {**{c: error(shown) for c in commands},
                                                                 "inspect": problem(shown)}  # fmt: skip
    sizes = {stem: SIZE for stem in ("000_ok", "001_ok", "odd")}
    return Entry(entry, labelme_with(name, document, extra), expect, sizes=sizes, pairs=pairs, data="labelme")


def multi_frame(fmt: str) -> Callable[[], bytes]:
    """A two-frame GIF or TIFF: the first frame is the image."""

    def make() -> bytes:
        first, second = (Image.fromarray(sample_rgb(seed=seed)) for seed in (80, 81))
        if fmt == "GIF":
            first, second = first.convert("P"), second.convert("P")
        buffer = io.BytesIO()
        first.save(buffer, format=fmt, save_all=True, append_images=[second])
        return buffer.getvalue()

    return make


def mode_image(mode: str, fmt: str = "PNG", **options: object) -> Callable[[], bytes]:
    return lambda: encode(Image.fromarray(sample_rgb(seed=90)).convert(mode), fmt, **options)


def int32_tiff() -> bytes:
    return encode(Image.fromarray(sample_rgb(seed=91)[..., 0].astype(np.int32) * 1000), "TIFF")


EVERY_COMMAND_FAILS = ("convert", "inspect", "train", "predict", "evaluate", "evaluate-folders")
GOOD_FILES = {"000_ok": SIZE}

ENTRIES: list[Entry] = [
    # odd but valid images: every command succeeds, masks have the displayed size
    good_image("cmyk_jpeg", "cmyk.jpg", cmyk_jpeg),
    good_image("rgba_png", "rgba.png", rgba_png),
    good_image("gray_png", "gray.png", gray_png),
    good_image("palette_transparent_png", "palette.png", palette_png),
    good_image("i16_png", "sixteen.png", i16_png),
    good_image("rgb48_png", "rgb48.png", rgb48_png),
    good_image("float32_tiff", "float.tif", float_tiff),
    good_image("exif_orientation_6", "rot6.jpg", exif_jpeg(6), ROTATED),
    good_image("exif_orientation_8", "rot8.jpg", exif_jpeg(8), ROTATED),
    good_image("jpeg_garbled_scan", "garbled.jpg", jpeg_bad_scan),
    good_image("name_space_accent", "café 2.png", png_rgb),
    good_image("name_cjk", "日本.png", png_rgb),
    good_image("name_not_utf8", NON_UTF8_NAME, png_rgb),
    # unreadable images: one-line errors naming the file; inspect lists them; the server refuses them
    bad_image("zero_byte_png", "empty.png", zero_bytes),
    bad_image("zero_byte_jpeg", "empty.jpg", zero_bytes),
    bad_image("truncated_png", "cut.png", truncated(png_rgb)),
    bad_image("truncated_jpeg", "cut.jpg", truncated(jpeg_rgb)),
    bad_image("jpeg_broken_header", "header.jpg", jpeg_bad_header),
    bad_image("png_corrupt_idat", "scrambled.png", png_corrupt_idat),
    bad_image("text_named_png", "notes.png", text_file),
    bad_image("png_bomb_30000", "bomb.png", png_bomb, status=413),
    bad_image("gif_65535_screen", "huge.gif", huge_gif, status=413),
    bad_image("truncated_not_utf8_name", NON_UTF8_NAME, truncated(png_rgb)),
    # masks (evaluate --pred --true reads data/masks against pred/)
    mask_entry("mask_i16", i16_mask((0, 1, 2)), valid=True, folders=OK),
    mask_entry("mask_i16_values_1000", i16_mask((0, 1000, 2)), valid=False, folders=error("masks/odd.png")),
    mask_entry("mask_size_mismatch", size_mismatch_mask, valid=False, folders=error("pred/odd.png")),
    mask_entry("mask_labels_out_of_range", out_of_range_mask, valid=False, folders=error("masks/odd.png")),
    mask_entry("mask_truncated", truncated(mask_png), valid=False, folders=error("masks/odd.png")),
    mask_entry("mask_zero_bytes", zero_bytes, valid=False, folders=error("masks/odd.png")),
    mask_entry("mask_pred_wrong_size", sample_mask, valid=True, folders=error("pred/odd.png"), pred_size=(40, 24)),
    mask_entry("mask_rgb_colour_table", sample_mask, valid=True, then=as_rgb_masks(unknown_colour=False)),
    mask_entry("mask_rgb_unknown_colour", sample_mask, valid=False, then=as_rgb_masks(unknown_colour=True)),
    Entry(
        "mask_rgb_without_table",
        dataset_with_mask(colourful_mask),  # the command needs --colors: all refuse
        {command: error("masks/odd.png") for command in ("inspect", "train", "evaluate", "evaluate-folders")},
    ),
    # labelme annotations
    labelme_entry("labelme_missing_image", "missing.json", json_missing_image),
    labelme_entry("labelme_bad_base64", "base64.json", json_bad_base64),
    labelme_entry("labelme_invalid_json", "broken.json", json_cut_short),
    labelme_entry("labelme_not_utf8", "latin1.json", json_latin1, with_image=True),
    labelme_entry("labelme_polygon_2_points", "line.json", json_two_point_polygon, with_image=True),
    labelme_entry("labelme_point_nan", "nan.json", json_nan_point, with_image=True),
    labelme_entry("labelme_bomb_imagedata", "bomb.json", json_bomb_imagedata),
    Entry(
        "labelme_exif_imagedata",
        labelme_exif_embedded,
        {c: OK for c in ("convert", "inspect", "train", "evaluate")},
        sizes={"000_ok": SIZE, "rotated": ROTATED},
        pairs=2,
        data="labelme",
    ),
    # folders and links
    folder_entry("empty_folder", empty_folder, "empty", {c: error("empty_folder/empty") for c in EVERY_COMMAND_FAILS}),
    Entry(
        "no_pairs",
        no_pairs,
        {c: error("no_pairs/data") for c in ("convert", "inspect", "train", "evaluate")},
        labelme="data",
    ),
    Entry(
        "dangling_symlink",
        dangling_symlinks,
        {
            "convert": error("gone.json"),
            "inspect": problem("gone.png"),
            "train": OK,
            "predict": OK,
            "evaluate": OK,
            "evaluate-folders": error("gone.png"),
        },
        sizes=GOOD_FILES,
        pairs=2,
        pred="data/masks",
    ),
    Entry(
        "dangling_symlink_argument",
        dangling_symlinks,
        {"predict": error("gone.png")},
        predict_inputs=("predict/000_ok.png", "predict/gone.png"),
    ),
    Entry(
        "symlink_loop",
        symlink_loops,
        {
            "convert": OK,
            "inspect": problem("loop.png"),
            "train": OK,
            "predict": OK,
            "evaluate": OK,
            "evaluate-folders": error("loop.png"),
        },
        sizes=GOOD_FILES,
        pairs=2,
        pred="data/masks",
    ),
    Entry(
        "folder_named_png", folders_named_png, {"inspect": OK, "train": OK, "predict": OK}, sizes=GOOD_FILES, pairs=2
    ),
    Entry(
        "folder_named_png_argument",
        folders_named_png,
        {"predict": error("folder.png")},
        predict_inputs=("predict/000_ok.png", "predict/folder.png"),
    ),
    # class lists: one reader for every command; a bad list is one line naming the file
    class_file_entry(
        "classes_txt_crlf_bom",
        "class_names.txt",
        "\ufeffbackground\r\ncat\r\ndog\r\n",
        ok=True,
        report={"classes": list(CLASSES), "classes_origin": "class_names.txt"},
    ),
    class_file_entry(
        "classes_txt_ignore_and_blank_lines",
        "labels.txt",
        "__ignore__\n\nbackground\n cat \n\ndog\n",
        ok=True,
        report={"classes": list(CLASSES)},
    ),
    class_file_entry(
        "classes_json_name_list",
        "classes.json",
        json.dumps(list(CLASSES)),
        ok=True,
        report={"classes": list(CLASSES), "classes_origin": "classes.json"},
    ),
    class_file_entry(
        "classes_json_colour_table_index_masks",
        "classes.json",
        json.dumps({"classes": [{"name": n, "rgb": [i, i, i]} for i, n in enumerate(CLASSES)]}),
        ok=True,
        report={"encoding": "index", "classes_origin": "classes.json colour table"},
    ),
    class_file_entry(
        "classes_txt_not_utf8", "class_names.txt", "background\nchat\u00e9\ndog\n".encode("latin-1"), ok=False
    ),
    class_file_entry("classes_txt_repeated", "class_names.txt", "background\ncat\ncat\n", ok=False),
    class_file_entry("classes_txt_one_class", "class_names.txt", "background\n", ok=False),
    class_file_entry("classes_txt_tab_in_name", "class_names.txt", "background\ncat\tdog\ndog\n", ok=False),
    class_file_entry("classes_json_200k_deep", "classes.json", deep_json(), ok=False),
    class_file_entry("classes_json_empty_file", "classes.json", "", ok=False),
    class_file_entry("classes_json_classes_not_a_list", "classes.json", '{"classes": 5}', ok=False),
    # 0/255 masks: binary only when the class list does not say otherwise
    Entry(
        "mask_0_255_with_three_class_names",
        binary_masks(class_file=True),
        {c: OK for c in DATA_COMMANDS},
        report={"encoding": "index", "num_classes": 3, "classes_origin": "class_names.txt"},
    ),
    Entry(
        "mask_0_255_without_class_names",
        binary_masks(class_file=False),
        {"inspect": OK},
        report={"encoding": "binary-0-255", "classes": ["background", "foreground"], "classes_origin": "0/255 masks"},
    ),
    # more odd masks
    mask_entry("mask_png_bomb_30000", png_bomb, valid=False, folders=error("masks/odd.png")),
    mask_entry(
        "mask_rgb_header_bomb",
        sample_mask,
        valid=False,
        then=chain(as_rgb_masks(unknown_colour=False), replace_odd_mask(png_header_bomb(color_type=2))),
    ),
    mask_entry("mask_palette_out_of_range", palette_mask_out_of_range, valid=False, folders=error("masks/odd.png")),
    mask_entry("mask_la_mode", mode_mask("LA"), valid=True, folders=OK),
    mask_entry("mask_rgba_grey", mode_mask("RGBA"), valid=True, folders=OK),
    Entry("mask_1bit", dataset_with_mask(mode_mask("1")), {c: OK for c in DATA_COMMANDS}),
    # pairing: what is left out is listed, and training goes on without it
    Entry(
        "image_without_mask",
        unpaired("image"),
        {"inspect": problem("lonely.png"), "train": OK, "evaluate": OK},
        pairs=2,
    ),
    Entry(
        "mask_without_image", unpaired("mask"), {"inspect": problem("orphan.png"), "train": OK, "evaluate": OK}, pairs=2
    ),
    Entry(
        "same_name_two_images",
        unpaired("twice"),
        {"inspect": problem("000_ok.png"), "train": OK, "evaluate": OK},
        pairs=2,
    ),
    Entry("hidden_files_ignored", unpaired("hidden"), {c: OK for c in DATA_COMMANDS}, pairs=2),
    # splits: train, evaluate and inspect agree on which is which
    Entry(
        "split_train_valid",
        split_dataset(("train", 3), ("valid", 2)),
        {c: OK for c in DATA_COMMANDS},
        pairs=3,
        eval_pairs=2,
        val_pairs=2,
        report={"split": "train", "split_roles": {"train": "train", "validation": "valid", "test": None}},
    ),
    Entry(
        "split_train_validation_test",
        split_dataset(("train", 2), ("validation", 2), ("test", 1)),
        {c: OK for c in DATA_COMMANDS},
        pairs=2,
        eval_pairs=2,
        val_pairs=2,
        report={"split_roles": {"train": "train", "validation": "validation", "test": "test"}},
    ),
    Entry(
        "voc_layout",
        voc_dataset(),
        {c: OK for c in DATA_COMMANDS},
        pairs=2,
        eval_pairs=2,
        val_pairs=2,
        report={"layout": "voc", "encoding": "palette", "classes_origin": "class_names.txt"},
    ),
    Entry(
        "voc_split_list_not_utf8",
        voc_dataset(list_bytes=b"2007_\xe9\n"),
        {c: error("train.txt") for c in ("inspect", "train")} | {"evaluate": error("val.txt")},
    ),
    # labelme labels and files
    labelme_case("labelme_label_empty", "odd.json", odd_label_json(""), ok=False),
    labelme_case("labelme_label_newline", "odd.json", odd_label_json("dog\nbird"), ok=False),
    labelme_case("labelme_label_surrounding_spaces", "odd.json", odd_label_json(" cat "), ok=True),
    labelme_case("labelme_label_not_a_string", "odd.json", odd_label_json(7), ok=False),
    labelme_case("labelme_json_200k_deep", "odd.json", deep_labelme, ok=False),
    labelme_case("labelme_mask_shape_at_1e30", "odd.json", far_mask_shape, ok=True),
    labelme_case("labelme_utf16_json", "odd.json", utf16_labelme, ok=True),
    labelme_case(
        "labelme_unknown_shape_type",
        "odd.json",
        labelme_shape_json({"label": "cat", "points": [[1, 1], [5, 5]], "shape_type": "ellipse"}),
        ok=False,
    ),
    labelme_case(
        "labelme_mask_shape_bad_base64",
        "odd.json",
        labelme_shape_json({"label": "cat", "points": [[1, 1]], "shape_type": "mask", "mask": "@@"}),
        ok=False,
    ),
    labelme_case(
        "labelme_windows_image_path",
        "odd.json",
        lambda: labelme_json("C:\\Users\\me\\photos\\odd.png", WIDTH, HEIGHT),
        ok=True,
    ),
    labelme_case("labelme_coco_file_beside", "odd.json", odd_label_json("cat"), ok=True, extra=coco_beside),
    Entry(
        "labelme_names_differ_in_case",
        labelme_with("odd.json", odd_label_json("cat"), case_twin),
        {"convert": error("001_ok.json"), "inspect": problem("001_ok.json"), "train": OK, "evaluate": OK},
        pairs=3,
        data="labelme",
    ),
    Entry(
        "labelme_background_not_first",
        labelme_with("odd.json", odd_label_json("cat"), misplaced_background),
        {"convert": error("labels.txt"), **{c: error("labels.txt") for c in DATA_COMMANDS}},
        sizes={stem: SIZE for stem in ("000_ok", "001_ok", "odd")},
        data="labelme",
    ),
    # more odd but valid images
    good_image("la_png", "la.png", mode_image("LA")),
    good_image("one_bit_png", "bits.png", mode_image("1")),
    good_image("bmp", "plain.bmp", mode_image("RGB", "BMP")),
    good_image("webp", "plain.webp", mode_image("RGB", "WEBP", quality=90)),
    good_image("progressive_jpeg", "progressive.jpg", mode_image("RGB", "JPEG", progressive=True, quality=90)),
    good_image("png_named_jpg", "disguised.jpg", png_rgb),
    good_image("uppercase_extension", "SHOUT.PNG", png_rgb),
    good_image("animated_gif", "animated.gif", multi_frame("GIF")),
    good_image("multipage_tiff", "pages.tif", multi_frame("TIFF")),
    good_image("int32_tiff", "int32.tif", int32_tiff),
    # uploads only the server sees
    Entry("upload_text_plain", text_upload, {"serve": http(415)}, upload="notes.txt", upload_type="text/plain"),
    Entry("upload_over_limit", big_upload, {"serve": http(413)}, upload="big.png", upload_type="image/png"),
]

ENTRY_BY_NAME = {entry.name: entry for entry in ENTRIES}
BASE = "_base"  # a plain dataset (four good pairs) the tests train their checkpoint on


def build_base(root: Path) -> None:
    for number in range(4):
        write_png(root / "images" / f"b{number}.png", sample_rgb(seed=30 + number))
        write_png(root / "masks" / f"b{number}.png", sample_mask())
    write_classes(root)


def generate(out: str | Path, names: Sequence[str] | None = None) -> dict[str, str]:
    """Write the corpus (all entries, or ``names``), the base dataset and manifest.json into ``out``.

    Returns:
        Entry name -> reason, for the entries this file system cannot hold (not written).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_base(out / BASE)
    chosen = ENTRIES if names is None else [ENTRY_BY_NAME[name] for name in names]
    skipped: dict[str, str] = {}
    for entry in chosen:
        folder = out / entry.name
        folder.mkdir()
        try:
            entry.build(folder)
        except Unsupported as reason:
            shutil.rmtree(folder)
            skipped[entry.name] = str(reason)
    manifest = {
        entry.name: {command: outcome.describe() for command, outcome in entry.expect.items()}
        for entry in chosen
        if entry.name not in skipped
    }
    write(out / "manifest.json", json.dumps({"entries": manifest, "skipped": skipped}, indent=1).encode())
    return skipped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the corpus into (created; must be empty)")
    parser.add_argument("names", nargs="*", metavar="ENTRY", help="entries to write (default all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in ENTRY_BY_NAME]
    if unknown:
        parser.error(f"unknown entries {unknown}; known: {', '.join(ENTRY_BY_NAME)}")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    names = args.names or list(ENTRY_BY_NAME)
    skipped = generate(args.out, names)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    print(f"wrote {len(names) - len(skipped)} entries and manifest.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
