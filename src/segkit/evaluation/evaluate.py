"""Evaluate a checkpoint on a dataset folder, at every image's original size.

Predictions go through :class:`segkit.prediction.predictor.Predictor`, so they are
made exactly as ``segkit predict`` makes them (same resize policy, scores resized
back to the original pixels), and the metrics are computed against the original,
un-resized masks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from segkit.errors import SegkitError
from segkit.evaluation.per_image import ImageCallback, ImageResult

logger = logging.getLogger(__name__)


def open_evaluation_source(data: str | Path, split: str | None, ignore_index: int) -> Any:
    """Open ``data``; with splits and no ``split`` given, the validation split (else test, else the default).

    The splits are listed from the folder names first, so only the split evaluated is read.
    """
    from segkit.data.sources import list_splits, open_source, split_roles

    if split is None:
        splits = list_splits(data)
        split = split_roles(splits).evaluation
        if splits and split is None:
            logger.warning("%s has no validation or test split; evaluating on its default split", data)
    return open_source(data, split=split, ignore_index=ignore_index)


def evaluate_checkpoint(
    checkpoint: str | Path | dict[str, Any],
    data: str | Path | Any,
    *,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    ignore_index: int | None = None,
    split: str | None = None,
    val_split: float | None = None,
    on_image: ImageCallback | None = None,
) -> dict[str, Any]:
    """Metrics of a checkpoint's predictions on a dataset, at the original image sizes.

    Args:
        checkpoint: checkpoint file or loaded checkpoint dict.
        data: dataset folder (any layout :func:`segkit.data.sources.open_source` reads),
            or an already opened source (``classes``, ``__len__``, ``load(i)``).
        batch_size: images per forward pass.
        device: ``"auto"`` (CUDA, MPS, CPU), ``"cpu"``, ``"cuda:1"`` ...
        ignore_index: mask value left out of the metrics (default: the checkpoint's).
        split: split of a split dataset (default: the validation split, else test; see
            :func:`segkit.data.sources.split_roles`).
        val_split: evaluate only the images ``segkit train --val-split`` held out
            (the same deterministic split by name).
        on_image: called with each image's :class:`~segkit.evaluation.per_image.ImageResult`
            (its confusion matrix and pixels), e.g. a
            :class:`~segkit.evaluation.per_image.PerImageScores`.

    Returns:
        The metrics dict of :meth:`segkit.evaluation.confusion.ConfusionMatrix.compute`,
        with the checkpoint's class names.

    Raises:
        SegkitError: unreadable checkpoint or data, or a class count that differs.
    """
    from segkit.evaluation.confusion import ConfusionMatrix
    from segkit.prediction.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    ignore = predictor.ignore_index if ignore_index is None else ignore_index
    source = open_evaluation_source(data, split, ignore) if isinstance(data, (str, Path)) else data
    data_classes = list(source.classes)
    if len(data_classes) != predictor.num_classes:
        raise SegkitError(
            data if isinstance(data, (str, Path)) else None,
            f"the data has {len(data_classes)} classes ({', '.join(data_classes)}) but the checkpoint has "
            f"{predictor.num_classes} ({', '.join(predictor.classes)}); give the data a class list "
            "(e.g. class_names.txt) matching the checkpoint",
        )
    if data_classes != predictor.classes:
        logger.warning("class names differ; using the checkpoint's: %s", ", ".join(predictor.classes))
    matrix = ConfusionMatrix(predictor.num_classes, ignore_index=ignore, class_names=predictor.classes)
    indices = list(range(len(source)))
    if val_split is not None:
        from segkit.data.sources import split_by_name

        indices = split_by_name([sample.name for sample in source.samples], val_split)[1]
    starts = range(0, len(indices), batch_size)
    for start in tqdm(starts, desc="evaluate", unit="batch", leave=False, disable=None):
        samples = [source.load(index) for index in indices[start : start + batch_size]]
        predictions = predictor.predict_batch([sample.image for sample in samples], batch_size=batch_size)
        for sample, prediction in zip(samples, predictions):
            matrix.update(prediction, sample.mask)
            if on_image is not None:
                on_image(ImageResult.from_masks(sample.name, prediction, sample.mask, predictor.num_classes, ignore,
                                                image=sample.image))
    return matrix.compute()
