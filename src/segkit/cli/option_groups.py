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
from segkit.prediction.options import MAX_TILE_BATCH, PredictionOptions

DEFAULTS = PredictionOptions()


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """How images are predicted: shared by ``segkit predict`` and ``segkit evaluate``, so what is scored is what is shipped."""
    group = parser.add_argument_group("prediction (as segkit predict)")
    group.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        help=f"images per forward pass (default %(default)s; tile windows: at most {MAX_TILE_BATCH})",
    )
    group.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:1, mps (default auto)")
    group.add_argument(
        "--threshold", type=float, metavar="T", help="binary checkpoints: foreground probability threshold"
    )
    group.add_argument(
        "--tile",
        default=DEFAULTS.tile,
        metavar="N|HxW",
        help="predict in overlapping N x N (or H x W) windows of original pixels, blended with a Gaussian "
        "weight; 0 never tiles; default auto: crop checkpoints tile images larger than 4 x img_size",
    )
    group.add_argument(
        "--overlap",
        type=float,
        default=DEFAULTS.overlap,
        help="fraction of a window shared with its neighbour (default %(default)s)",
    )
    group.add_argument(
        "--tta",
        default=DEFAULTS.tta,
        metavar="AUG",
        help="test-time augmentation: none (default), flip, vflip, scale or a combination such as flip+scale",
    )
    group.add_argument(
        "--crf",
        action="store_true",
        help="refine the probabilities with a dense CRF on the image colours (DeepLab v1/v2 post-processing; "
        "needs PyTorch)",
    )


def prediction_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`add_prediction_options`, by their :class:`PredictionOptions` names."""
    return {item.name: getattr(args, item.name) for item in fields(PredictionOptions)}


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
