"""The options of ``segkit evaluate`` and ``segkit report``, declared once (help, defaults, checks); imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segkit.data.options import (
    ReadOptions,
    classes_option,
    ignore_index_option,
    split_option,
    val_split_option,
    val_split_problem,
)
from segkit.errors import OptionError
from segkit.options import nested, option
from segkit.prediction.options import PredictionOptions, batch_size_option, device_option


def worst_option(condition: str = "") -> Any:
    """``--worst``: how many of the lowest-scoring images a report shows (``condition``: when it applies)."""
    return option(8, help=f"{condition}worst images shown", parse=int, metavar="K")


def check_report_options(worst: int, val_split: float | None) -> None:
    """The checks of the options ``evaluate`` and ``report`` share.

    Raises:
        OptionError: ``worst`` below 0 or ``val_split`` outside ``[0, 1)``.
    """
    if worst < 0:
        raise OptionError(f"--worst must be at least 0, not {worst}")
    problem = val_split_problem(val_split)
    if problem:
        raise OptionError(problem)


@dataclass(frozen=True)
class EvaluateOptions:
    """``segkit evaluate``'s own options, by :func:`segkit.evaluate`'s keyword names (checked when made).

    The prediction options are :class:`~segkit.prediction.options.PredictionOptions`; which
    options go with which form (``CHECKPOINT DATA`` or ``--pred --true``) is checked by
    :func:`segkit.evaluate`.

    Raises:
        OptionError: ``worst`` below 0 or ``val_split`` outside ``[0, 1)``.
    """

    pred: str | Path | None = option(
        None, help="folder of predicted index masks (<stem>.png)", parse=Path, metavar="DIR"
    )
    true: str | Path | None = option(None, help="folder of true masks with the same stems", parse=Path, metavar="DIR")
    classes: Any = classes_option(
        help="class names: with a checkpoint, the data's (as segkit train --classes); with --pred, one name per "
        "line (__ignore__ skipped) or a JSON/CSV colour table",
        metavar="FILE|a,b,c",
        group="options",
    )
    num_classes: int | None = option(
        None, help="with --pred: number of classes (default: largest value + 1)", parse=int, metavar="N"
    )
    ignore_index: int | None = ignore_index_option(
        None, help="true value to ignore (default: the checkpoint's; 255 with --pred)"
    )
    json: str | Path | None = option(
        None, help="also write all metrics as JSON (NaN as null)", parse=Path, metavar="FILE"
    )
    split: str | None = split_option("val, valid, validation, test")
    read: ReadOptions = nested(ReadOptions, flat=True)
    val_split: float | None = val_split_option(
        None, help="only the images `segkit train --val-split F` held out (same split by name)"
    )
    report: str | Path | None = option(
        None,
        help="also write a self-contained HTML report: metrics, confusion matrix, curves, per-image scores, worst images",
        parse=Path,
        metavar="FILE",
    )
    worst: int = worst_option("with --report: ")

    def __post_init__(self) -> None:
        check_report_options(self.worst, self.val_split)


@dataclass(frozen=True)
class ReportOptions:
    """How :func:`segkit.report` scores a run: ``segkit report``'s options by their keyword names (checked when made).

    Raises:
        OptionError: ``val_split`` without ``data`` or outside ``[0, 1)``, ``worst`` below 0 or
            ``batch_size`` below 1.
    """

    data: str | Path | None = option(
        None, help="evaluate on this dataset instead of the run's", parse=Path, metavar="DATA"
    )
    val_split: float | None = val_split_option(
        None, help="with --data: only the images `segkit train --val-split F` held out", group="options"
    )
    worst: int = worst_option()
    batch_size: int = batch_size_option(group="options")
    device: str = device_option(group="options")

    def __post_init__(self) -> None:
        if self.val_split is not None and self.data is None:
            raise OptionError("--val-split only applies with --data (the run's own split is used otherwise)")
        check_report_options(self.worst, self.val_split)
        PredictionOptions(batch_size=self.batch_size, device=self.device)  # their checks
