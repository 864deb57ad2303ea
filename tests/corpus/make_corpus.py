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
        "version": "5.4.1", "flags": {}, "shapes": [{"group_id": None, "flags": {}, **s} for s in shapes],
        "imagePath": image_path, "imageData": None, "imageHeight": height, "imageWidth": width, **extra,
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
        entry, image_builder(name, make, displayed), {**expect, "serve": http(200)},
        sizes={"000_ok": SIZE, Path(fs_name(name)).stem: displayed}, upload=f"predict/{fs_name(name)}",
    )


def bad_image(entry: str, name: str | bytes, make: Callable[[], bytes], status: int = 400) -> Entry:
    """An unreadable image: errors naming it, inspect lists it, the server answers ``status``."""
    shown = fs_name(name)
    expect = {command: error(shown) for command in ("convert", "train", "predict", "evaluate")}
    return Entry(
        entry, image_builder(name, make, SIZE), {**expect, "inspect": problem(shown), "serve": http(status)},
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
    expect = {"inspect": OK, "train": OK, "evaluate": OK} if valid else {
        "inspect": problem(odd), "train": error(odd), "evaluate": error(odd)
    }
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
    Entry("mask_rgb_without_table", dataset_with_mask(colourful_mask),  # the command needs --colors: all refuse
          {command: error("masks/odd.png") for command in ("inspect", "train", "evaluate", "evaluate-folders")}),
    # labelme annotations
    labelme_entry("labelme_missing_image", "missing.json", json_missing_image),
    labelme_entry("labelme_bad_base64", "base64.json", json_bad_base64),
    labelme_entry("labelme_invalid_json", "broken.json", json_cut_short),
    labelme_entry("labelme_not_utf8", "latin1.json", json_latin1, with_image=True),
    labelme_entry("labelme_polygon_2_points", "line.json", json_two_point_polygon, with_image=True),
    labelme_entry("labelme_point_nan", "nan.json", json_nan_point, with_image=True),
    labelme_entry("labelme_bomb_imagedata", "bomb.json", json_bomb_imagedata),
    Entry("labelme_exif_imagedata", labelme_exif_embedded, {c: OK for c in ("convert", "inspect", "train", "evaluate")},
          sizes={"000_ok": SIZE, "rotated": ROTATED}, pairs=2, data="labelme"),
    # folders and links
    folder_entry("empty_folder", empty_folder, "empty", {c: error("empty_folder/empty") for c in EVERY_COMMAND_FAILS}),
    Entry("no_pairs", no_pairs, {c: error("no_pairs/data") for c in ("convert", "inspect", "train", "evaluate")},
          labelme="data"),
    Entry("dangling_symlink", dangling_symlinks,
          {"convert": error("gone.json"), "inspect": problem("gone.png"), "train": OK, "predict": OK, "evaluate": OK,
           "evaluate-folders": error("gone.png")}, sizes=GOOD_FILES, pairs=2, pred="data/masks"),
    Entry("dangling_symlink_argument", dangling_symlinks, {"predict": error("gone.png")},
          predict_inputs=("predict/000_ok.png", "predict/gone.png")),
    Entry("symlink_loop", symlink_loops,
          {"convert": OK, "inspect": problem("loop.png"), "train": OK, "predict": OK, "evaluate": OK,
           "evaluate-folders": error("loop.png")}, sizes=GOOD_FILES, pairs=2, pred="data/masks"),
    Entry("folder_named_png", folders_named_png, {"inspect": OK, "train": OK, "predict": OK},
          sizes=GOOD_FILES, pairs=2),
    Entry("folder_named_png_argument", folders_named_png, {"predict": error("folder.png")},
          predict_inputs=("predict/000_ok.png", "predict/folder.png")),
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
