"""What ``segkit suggest`` and ``segkit audit`` write: a ranking as a JSON list and a CSV table.

Their output folders appear complete or not at all (:func:`segkit.files.built_into`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from segkit.files import atomic_write, to_json_safe

STAGING_PREFIX = ".segkit-labelling-"  # the hidden folder an --out folder is built in


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
