"""Hostile model files for the corpus: tampered checkpoints every command that loads a model must refuse.

Built from a good checkpoint (the corpus's trained ``best.pt``): zip-level tampering (a
deflated bomb, overlapping entries) with the standard library, card-level tampering (inputs
that no memory holds) by rewriting the card with segkit's own writer. Each must be refused
by ``predict``, ``evaluate``, ``serve`` (at start-up) and ``export`` with exit 2, one line
naming the file, in seconds and without allocating what it asks for.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BOMB_BYTES = 256 * 2**20  # zeros a deflated entry inflates to (about 250 KB on disk)
OVERLAP_COPIES = 2000  # central-directory records pointing at the same stored bytes


@dataclass(frozen=True)
class ModelEntry:
    """A hostile model file: its name, how to make it from a good checkpoint, the phrase its refusal holds."""

    name: str
    build: Callable[[Path, Path], None]
    phrase: str


def deflate_entries(good: Path, out: Path, which: Callable[[zipfile.ZipInfo], bool], bomb: bool) -> None:
    """Copy ``good`` with the entries ``which`` selects deflated (the first data entry replaced by zeros: a bomb)."""
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(out, "w") as target:
        bombed = False
        for info in source.infolist():
            data = source.read(info.filename)
            if not which(info):
                target.writestr(info, data)
                continue
            if bomb and not bombed and "/data/" in info.filename:
                data, bombed = bytes(BOMB_BYTES), True
            target.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)


def overlapping_entries(good: Path, out: Path) -> None:
    """``good`` with its largest entry listed :data:`OVERLAP_COPIES` more times in the central directory.

    Every copy points at the same stored bytes, so the file stays small while its entries add
    up to gigabytes: the zip-quine trick, written by hand because no zip library makes it.
    """
    data = good.read_bytes()
    end = data.rindex(b"PK\x05\x06")
    count, size, offset = struct.unpack("<HII", data[end + 10 : end + 20])
    directory = data[offset : offset + size]
    records, position = [], 0
    while position < len(directory):
        name_length, extra_length, comment_length = struct.unpack("<HHH", directory[position + 28 : position + 34])
        length = 46 + name_length + extra_length + comment_length
        records.append(directory[position : position + length])
        position += length
    largest = max(records, key=lambda record: struct.unpack("<I", record[24:28])[0])
    name_length = struct.unpack("<H", largest[28:30])[0]
    name = largest[46 : 46 + name_length]
    copies = []
    for number in range(OVERLAP_COPIES):
        copy_name = name + f"_{number:05d}".encode()
        header = largest[:28] + struct.pack("<H", len(copy_name)) + largest[30:46]
        copies.append(header + copy_name + largest[46 + name_length :])
    new_directory = directory + b"".join(copies)
    total = count + OVERLAP_COPIES
    if total > 0xFFFF:
        raise ValueError("too many records for a zip without zip64")
    tail = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, total, total, len(new_directory), offset, 0)
    out.write_bytes(data[:offset] + new_directory + tail)


def tampered_card(
    preprocess: dict[str, object], model_kwargs: dict[str, object] | None = None
) -> Callable[[Path, Path], None]:
    """A builder writing the good checkpoint with its card's preprocessing (and model options) changed."""

    def build(good: Path, out: Path) -> None:
        import torch

        from segkit.checkpoint import load_checkpoint

        state = load_checkpoint(good).to_dict()
        state["card"]["preprocess"].update(preprocess)
        state["card"]["model"]["kwargs"].update(model_kwargs or {})
        torch.save(state, out)

    return build


MODEL_ENTRIES = [
    ModelEntry(
        "model_deflated_bomb",
        lambda good, out: deflate_entries(good, out, lambda info: "/data/" in info.filename, bomb=True),
        "compressed entr",
    ),
    ModelEntry(
        "model_every_entry_deflated",
        lambda good, out: deflate_entries(good, out, lambda info: True, False),
        "compressed entr",
    ),
    ModelEntry("model_overlapping_entries", overlapping_entries, "overlap"),
    ModelEntry("model_input_16384", tampered_card({"img_size": [16384, 16384]}), "megapixels"),
    # at the area limit, and wide: one forward pass needs hundreds of GiB (the weights are never built)
    ModelEntry(
        "model_input_at_area_limit", tampered_card({"img_size": [4096, 4096]}, {"base_channels": 256}), "needs about"
    ),
    ModelEntry(
        "model_crop_4096",
        tampered_card({"img_size": [4096, 4096], "resize": "crop"}, {"base_channels": 256}),
        "needs about",
    ),
]
MODEL_ENTRY_BY_NAME = {entry.name: entry for entry in MODEL_ENTRIES}
