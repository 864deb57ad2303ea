"""The options of ``segkit suggest`` and ``segkit audit``, declared once (the command line and the Python API).

Each field is the command's option and the keyword of :func:`segkit.suggest` / :func:`segkit.audit`
(which check the values); both commands also take the shared prediction options, and ``audit`` the
data options, as ``segkit train`` reads a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segkit.data.options import classes_option, overwrite_option
from segkit.options import option

DEFAULT_FOLDS = 3
DEFAULT_BUDGET = "10m"


@dataclass(frozen=True)
class SuggestOptions:
    """``segkit suggest``'s own options, by :func:`segkit.suggest`'s keyword names."""

    count: int = option(10, help="images to pick", parse=int, metavar="N")
    out: Path | None = option(
        None, help="write the picks, their pre-labels and a contact sheet", parse=Path, metavar="DIR"
    )
    json: Path | None = option(None, help="write the ranking as JSON (a list, best first)", parse=Path, metavar="FILE")
    overwrite: bool = overwrite_option(help="replace a non-empty --out")


@dataclass(frozen=True)
class AuditOptions:
    """``segkit audit``'s own options, by :func:`segkit.audit`'s keyword names."""

    model: Path | None = option(
        None,
        help="score with this model (.pt/.onnx/folder) instead of K-fold training",
        parse=Path,
        metavar="MODEL",
    )
    folds: int | None = option(None, help=f"folds of K-fold training (default {DEFAULT_FOLDS})", parse=int, metavar="K")
    time_budget: str | None = option(
        None,
        help=f"the folds' training and prediction together, e.g. 30m, 1h, 90s (default {DEFAULT_BUDGET})",
        metavar="T",
    )
    json: Path | None = option(
        None, help="write the ranking as JSON (and FILE's .csv beside it)", parse=Path, metavar="FILE"
    )
    out: Path | None = option(
        None, help="write audit.html, audit.json, audit.csv and the folds' runs", parse=Path, metavar="DIR"
    )
    overwrite: bool = overwrite_option(help="replace a non-empty --out")
    top: int = option(10, help="most suspect images printed and shown", parse=int, metavar="N")
    classes: str | None = classes_option(help="class names, as segkit train --classes", metavar="FILE|a,b,c")
