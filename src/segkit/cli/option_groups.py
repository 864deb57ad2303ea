"""Option groups several commands share, declared once: how images are predicted, how a dataset is read.

``segkit predict`` and ``segkit evaluate`` take the same prediction options (what is scored is
what is shipped); ``evaluate`` and ``export --quantize`` read labelled data as ``segkit train``
does. Their checks live in the library (:class:`~segkit.prediction.options.PredictionOptions`,
:func:`segkit.data.sources.open_source`).
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from segkit.data.options import ReadOptions
from segkit.options import add_arguments, collect
from segkit.prediction.options import PredictionOptions


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """How images are predicted: shared by ``predict``, ``evaluate`` and ``suggest``, so what is scored is what is
    shipped. The options are :class:`PredictionOptions`'s fields, with their help."""
    add_arguments(parser, PredictionOptions)


def prediction_options(args: argparse.Namespace) -> dict[str, Any]:
    """The prediction options the user gave (parsed), by their :class:`PredictionOptions` names; the rest default."""
    return collect(args, PredictionOptions)


def add_data_options(
    parser: argparse.ArgumentParser, title: str, split_default: str = "val, valid, validation, test"
) -> argparse._ArgumentGroup:
    """How a labelled dataset folder is read (as ``segkit train``): ``--split``, ``--masks``, ``--colors``.

    ``--classes`` is the command's own (its meaning differs with ``--pred``); ``split_default``
    says which split the command reads when none is given.
    """
    group = parser.add_argument_group(title)
    group.add_argument(
        "--split", metavar="NAME", help=f"split sub-folder or VOC ImageSets list (default: {split_default})"
    )
    for item in fields(ReadOptions):
        add_read_option(group, item.name)
    return group


def add_read_option(group: argparse._ActionsContainer, name: str) -> None:
    """Add the read option ``name`` (a :class:`~segkit.data.options.ReadOptions` field) as it is declared there."""
    item = next(item for item in fields(ReadOptions) if item.name == name)
    flag, text = "--" + name.replace("_", "-"), item.metadata["help"].replace("%", "%%")
    if item.metadata["parse"] is bool:
        group.add_argument(flag, action="store_true", help=text)
    else:
        group.add_argument(flag, metavar=item.metadata["metavar"], help=text)


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`add_data_options`, by their library names (``split`` and every read option)."""
    return {"split": args.split, **{item.name: getattr(args, item.name) for item in fields(ReadOptions)}}
