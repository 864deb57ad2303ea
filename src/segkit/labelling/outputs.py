"""What ``segkit suggest`` and ``segkit audit`` write: a ranking as a JSON list and a CSV table, and an output
folder that appears complete or not at all."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segkit.errors import SegkitError
from segkit.files import atomic_write, make_staging_dir, to_json_safe


def write_json(path: str | Path, entries: Sequence[dict[str, Any]]) -> None:
    """Write a ranking as an indented JSON list, first entry first (NaN as null), atomically."""
    text = json.dumps(to_json_safe(list(entries)), indent=2) + "\n"
    atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV table (``header``, then ``rows``) to ``path``, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    table = buffer.getvalue()
    atomic_write(path, lambda temp: temp.write_text(table, encoding="utf-8"))


def check_out_folder(out: str | Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` (checked before any work is done).

    Raises:
        SegkitError: naming ``out``.
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SegkitError(out, "exists and is not empty; use --overwrite")


@contextmanager
def built_into(out: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden staging folder beside ``out`` to write into, renamed to ``out`` when the block succeeds.

    On any error the staging folder is removed and ``out`` is untouched; an existing ``out`` is
    replaced only with ``overwrite`` (or when it is empty).
    """
    staging = make_staging_dir(out, prefix=f".{out.name}.partial.")
    try:
        yield staging
        if out.exists():
            check_out_folder(out, overwrite)
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
