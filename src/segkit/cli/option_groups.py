"""Option groups several commands share, declared once: how images are predicted, how a dataset is read.

``segkit predict``, ``evaluate``, ``suggest`` and ``audit`` take the same prediction options (what is
scored is what is shipped); ``audit``, ``convert masks`` and ``export --quantize`` read labelled data
as ``segkit train`` does (``evaluate`` and ``inspect`` hold the same declarations in their options
classes: ``split_option`` and ``nested(ReadOptions, flat=True)``). The options and their checks are declared in the library
(:class:`~segkit.prediction.options.PredictionOptions`, :mod:`segkit.data.options`); this module
only adds them to a command's parser and reads them back.
"""

from __future__ import annotations

import argparse
from typing import Any

from segkit.data.options import ReadOptions, split_option
from segkit.options import add_arguments, add_option, collect
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
    """How a labelled dataset folder is read (as ``segkit train``): ``--split`` and the read options, under ``title``.

    ``split_default`` says which split the command reads when none is given. Both are declared in
    :mod:`segkit.data.options` (:func:`~segkit.data.options.split_option`, :class:`ReadOptions`);
    ``--classes`` is the command's own. Options not given are left out of the parsed arguments
    (the library's defaults apply), as :func:`segkit.options.add_arguments` does.
    """
    group = parser.add_argument_group(title)
    add_option(parser, "split", split_option(split_default), {"data": group})
    add_arguments(parser, ReadOptions, groups={"data": group})
    return group


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`add_data_options` the user gave, by their library names (``split``, the read options)."""
    return {**({"split": args.split} if hasattr(args, "split") else {}), **collect(args, ReadOptions)}
