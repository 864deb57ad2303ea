"""Evaluate a checkpoint on a dataset folder, at every image's original size (``segkit evaluate``).

Predictions go through :class:`segkit.prediction.predictor.Predictor` with the
options ``segkit predict`` takes (tiling, TTA, CRF, threshold), so they are made
exactly as they are shipped (same resize policy, scores resized back to the
original pixels), and the metrics are computed against the original, un-resized
masks. An exported ``.onnx`` model evaluates the same way, through ONNX Runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from segkit.data.options import READ_KEYWORDS
from segkit.errors import OptionError, SegkitError
from segkit.evaluation.options import EvaluateOptions
from segkit.evaluation.per_image import ImageCallback, ImageResult, PerImageScores
from segkit.files import check_output_path
from segkit.prediction.options import PredictionOptions

logger = logging.getLogger(__name__)

# Prediction options that only a checkpoint uses (the --pred form has its predictions already).
CHECKPOINT_PREDICTION_OPTIONS = ("tta", "crf", "threshold", "tile")


def evaluate(
    checkpoint: str | Path | None = None,
    data: str | Path | None = None,
    *,
    pred: str | Path | None = None,
    true: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    json: str | Path | None = None,
    report: str | Path | None = None,
    worst: int = 8,
    split: str | None = None,
    val_split: float | None = None,
    masks: str | None = None,
    colors: str | Path | None = None,
    images: str | None = None,
    roi_masks: str | None = None,
    fit_masks: bool = False,
    label_map: str | Path | None = None,
    **prediction: Any,
) -> dict[str, Any]:
    """Pixel accuracy, IoU, Dice ... of a checkpoint on a dataset, or of predicted masks: ``segkit evaluate``.

    Give either ``checkpoint`` and ``data`` (the checkpoint predicts every image as
    :func:`segkit.predict` does, scored at the original size), or ``pred`` and ``true``
    (folders of masks paired by file name).

    Args:
        checkpoint: a ``.pt`` checkpoint, an exported ``.onnx`` model or a ``--format hf`` folder.
        data: the dataset folder to evaluate it on (any layout ``segkit train`` reads; with
            splits, the validation split, else the test split).
        pred: folder of predicted index masks (``<stem>.png``).
        true: folder of true masks with the same stems.
        classes: with a checkpoint, the data's class names (as ``segkit train --classes``); with
            ``pred``, the names in class order (a list, ``"a,b,c"``, a file or a colour table).
        num_classes: with ``pred``: number of classes (default: the largest value + 1).
        ignore_index: true mask value left out (default: the checkpoint's; 255 with ``pred``).
        json: also write every metric to this JSON file (NaN as null).
        report: also write a self-contained HTML report here (metrics, confusion matrix,
            curves, per-image scores, the worst images).
        worst: with ``report``: how many of the worst images it shows.
        split: with a checkpoint: the split of a dataset with splits.
        val_split: with a checkpoint: only the images ``segkit train --val-split`` held out.
        masks, images: with a checkpoint: the mask (image) folder name or ``{id}`` file pattern,
            as ``segkit train --masks`` (``--images``).
        roi_masks: with a checkpoint: region-of-interest masks (folder or pattern); pixels outside are not scored.
        fit_masks: with a checkpoint: resize masks that are scaled copies of their images.
        colors: with a checkpoint: the colour table of RGB colour-coded masks.
        **prediction: with a checkpoint, how it predicts, as
            :class:`~segkit.prediction.options.PredictionOptions`: ``batch_size=8``,
            ``device="auto"``, ``threshold=None``, ``tile="auto"``, ``overlap=0.25``,
            ``tta="none"``, ``crf=False``.

    Returns:
        The metrics (the JSON file's keys): ``pixel_accuracy``, ``mIoU``, ``mDice`` ...,
        ``per_class`` (each class's ``iou``, ``dice``, ``precision``, ``recall`` ...) and the
        ``confusion_matrix`` (rows: true class, columns: predicted).

    Raises:
        OptionError: neither or both forms, an option of the other form, or a value out of range
            (:class:`~segkit.evaluation.options.EvaluateOptions`).
        SegkitError: unreadable checkpoint, data or masks, or classes that do not match.

    Example:
        >>> import segkit
        >>> metrics = segkit.evaluate("runs/exp/best.pt", "data/", tta="flip", report="report.html")
        >>> metrics["mIoU"], metrics["per_class"]["road"]["iou"]
        >>> segkit.evaluate(pred="predicted/", true="data/masks/", classes="data/class_names.txt")["mIoU"]
    """
    data_options: dict[str, Any] = {
        "split": split,
        "val_split": val_split,
        "masks": masks,
        "colors": colors,
        "images": images,
        "roi_masks": roi_masks,
        "fit_masks": fit_masks,
        "label_map": label_map,
    }
    _check_form(checkpoint, data, pred, true, num_classes, data_options, prediction)
    EvaluateOptions(  # the options' own checks (the read options have none)
        pred=pred,
        true=true,
        classes=classes,
        num_classes=num_classes,
        ignore_index=ignore_index,
        json=json,
        split=split,
        val_split=val_split,
        report=report,
        worst=worst,
    )
    inputs = [item for item in (checkpoint, data, pred, true) if isinstance(item, (str, Path))]
    for output, option in ((json, "--json"), (report, "--report")):
        if output is not None:  # never write over the model, a truth mask or the data being scored
            check_output_path(output, inputs, option)
    scores = PerImageScores(worst) if report is not None else None
    if pred is not None:
        from segkit.evaluation.folders import evaluate_folders

        assert true is not None  # _check_form: --pred comes with --true
        metrics = evaluate_folders(
            pred,
            true,
            class_names=classes,
            ignore_index=255 if ignore_index is None else ignore_index,
            num_classes=num_classes,
            on_image=scores,
        )
    else:
        options = PredictionOptions(**prediction).predictor_kwargs()
        metrics = evaluate_checkpoint(
            checkpoint, data, ignore_index=ignore_index, classes=classes, on_image=scores, **data_options, **options
        )
    if json is not None:
        from segkit.evaluation.report import write_json

        write_json(metrics, json)
        logger.info("wrote %s", json)
    if report is not None:
        from segkit.evaluation.html_report import write_evaluation_report

        write_evaluation_report(
            report,
            metrics,
            scores,
            checkpoint=checkpoint,
            data=data,
            pred=pred,
            true=true,
            classes=classes,
            ignore_index=ignore_index,
            val_split=val_split,
        )
        logger.info("wrote %s", report)
    return metrics


def _check_form(
    checkpoint: object,
    data: object,
    pred: object,
    true: object,
    num_classes: int | None,
    data_options: dict[str, Any],
    prediction: dict[str, Any],
) -> None:
    """Exactly one of the two forms of :func:`evaluate`, with the options that belong to it."""
    checkpoint_form = checkpoint is not None
    folder_form = pred is not None or true is not None
    complete = data is not None if checkpoint_form else pred is not None and true is not None
    if checkpoint_form == folder_form or not complete:
        raise OptionError("give either CHECKPOINT DATA or --pred DIR --true DIR")
    if checkpoint_form and num_classes is not None:
        raise OptionError("--num-classes only applies with --pred/--true (a checkpoint knows its classes)")
    defaults = PredictionOptions()
    given = [name for name, value in data_options.items() if value is not None and value is not False]
    given += [
        name
        for name in CHECKPOINT_PREDICTION_OPTIONS
        if name in prediction and prediction[name] != getattr(defaults, name)
    ]
    if folder_form and given:
        raise OptionError(
            f"{', '.join('--' + name.replace('_', '-') for name in given)} only apply with CHECKPOINT DATA"
        )


def open_evaluation_source(data: str | Path, split: str | None = None, ignore_index: int = 255, **read: Any) -> Any:
    """Open ``data`` as ``segkit train`` does; with splits and no ``split`` given, the validation split.

    The splits are listed from the folder names first, so only the split evaluated is
    read; when there is no validation split, the test split, else the default one. ``read``:
    :func:`segkit.data.sources.open_source`'s ``masks``, ``colors``, ``classes``, ``images``,
    ``roi_masks``, ``fit_masks``, ``label_map``. Every unusable file is named at once.
    """
    from segkit.data.sources import list_splits, open_source, split_roles, usable

    if split is None and Path(data).is_dir():  # else open_source says what is wrong with it
        splits = list_splits(data, read.get("masks"), read.get("images"))
        split = split_roles(splits).evaluation
        if splits and split is None:
            logger.warning("%s has no validation or test split; evaluating on its default split", data)
    return usable(open_source(data, split=split, ignore_index=ignore_index, **read))


def held_out_by_the_run(card: Any, data: Path, source: Any) -> float | None:
    """The ``--val-split`` share to score when ``data`` is the folder the model trained on (else None).

    A model is scored honestly on images it did not train on: on its own training folder,
    only the share the run held out for validation (said in one line). When the run
    validated on another folder, or the card does not say where it trained, one line warns
    that the scores may include training images.
    """
    from segkit.data.sources import validation_images

    config = getattr(card.training, "config", None) or {}
    trained_on = config.get("data")
    if not trained_on:
        if card.training.epoch:  # a trained model that does not say on what
            logger.warning("%s: the model does not say which images it trained on; scores on them flatter it", data)
        return None
    if not Path(trained_on).exists() or Path(trained_on).resolve() != data.resolve():
        return None
    where = validation_images(
        trained_on, config.get("val"), config.get("masks"), float(config.get("val_split") or 0), config.get("images")
    )
    if where.held_out is None:  # validated on another folder or split: every image here trained it
        if where.split is None or source.split != where.split:
            logger.warning(
                "%s is the folder the model trained on (it validated on %s): these scores include training images",
                data,
                where.describe(),
            )
        return None
    logger.info(
        "%s is the folder the model trained on: scoring only the images the run held out for validation "
        "(--val-split %g, by name)",
        data,
        where.held_out,
    )
    return where.held_out


def evaluate_predictor(
    predictor: Any,
    source: Any,
    *,
    indices: Sequence[int] | None = None,
    ignore_index: int | None = None,
    source_name: str | Path | None = None,
    progress: bool | None = None,
    on_image: ImageCallback | None = None,
) -> dict[str, Any]:
    """Metrics of a predictor's masks on a data source's samples, at their original size.

    Args:
        predictor: a :class:`~segkit.prediction.predictor.Predictor` (any backend, with its options).
        source: ``classes``, ``__len__`` and ``load(i)`` -> sample with ``image`` and ``mask``
            (a :class:`~segkit.data.sources.DataSource`).
        indices: the samples to score (default: all).
        ignore_index: mask value left out (default: the predictor's).
        source_name: named in errors.
        progress: show a progress bar (default: when on a terminal).
        on_image: called with each image's :class:`~segkit.evaluation.per_image.ImageResult`
            (its confusion matrix and pixels), e.g. a
            :class:`~segkit.evaluation.per_image.PerImageScores`.

    Raises:
        SegkitError: the data's class count differs from the predictor's.
    """
    from segkit.evaluation.confusion import ConfusionMatrix

    data_classes = list(source.classes)
    if len(data_classes) != predictor.num_classes:
        raise SegkitError(
            source_name,
            f"the data has {len(data_classes)} classes ({', '.join(data_classes)}) but the checkpoint has "
            f"{predictor.num_classes} ({', '.join(predictor.classes)}); give the data a class list "
            "(e.g. class_names.txt or --classes) matching the checkpoint",
        )
    if data_classes != predictor.classes:
        logger.warning("class names differ; using the checkpoint's: %s", ", ".join(predictor.classes))
    ignore = predictor.ignore_index if ignore_index is None else ignore_index
    matrix = ConfusionMatrix(predictor.num_classes, ignore_index=ignore, class_names=predictor.classes)
    indices = list(range(len(source))) if indices is None else list(indices)
    batch_size = predictor.batch_size
    starts = range(0, len(indices), batch_size)
    disable = None if progress is None else not progress
    for start in tqdm(starts, desc="evaluate", unit="batch", leave=False, disable=disable):
        samples = [source.load(index) for index in indices[start : start + batch_size]]
        for sample, prediction in zip(samples, predictor.predict_batch([sample.image for sample in samples])):
            matrix.update(prediction, sample.mask)
            if on_image is not None:
                on_image(
                    ImageResult.from_masks(
                        sample.name, prediction, sample.mask, predictor.num_classes, ignore, image=sample.image
                    )
                )
    return matrix.compute()


def evaluate_checkpoint(
    checkpoint: str | Path | Any,
    data: str | Path | Any,
    *,
    device: str = "auto",
    ignore_index: int | None = None,
    split: str | None = None,
    val_split: float | None = None,
    on_image: ImageCallback | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Metrics of a checkpoint's predictions on a dataset, at the original image sizes.

    Args:
        checkpoint: checkpoint file (``.pt``, or an exported ``.onnx``) or a loaded
            :class:`~segkit.checkpoint.Checkpoint`.
        data: dataset folder (any layout :func:`segkit.data.sources.open_source` reads),
            or an already opened source (``classes``, ``__len__``, ``load(i)``).
        device: ``"auto"`` (CUDA, MPS, CPU), ``"cpu"``, ``"cuda:1"`` ...
        ignore_index: mask value left out of the metrics (default: the checkpoint's).
        split: split of a split dataset (default: the validation split, else test; see
            :func:`segkit.data.sources.split_roles`).
        val_split: evaluate only the images ``segkit train --val-split`` held out
            (the same deterministic split by name).
        on_image: called with each image's :class:`~segkit.evaluation.per_image.ImageResult`
            (its confusion matrix and pixels), e.g. a
            :class:`~segkit.evaluation.per_image.PerImageScores`.
        **options: how ``data`` is read, as ``segkit train`` reads it (``masks``, ``colors``,
            ``classes``, ``images``, ``roi_masks``, ``fit_masks``, ``label_map``), and the prediction
            options, as ``segkit predict``'s (``tiling``, ``tta``, ``crf``, ``threshold``,
            ``batch_size``; see :class:`~segkit.prediction.predictor.Predictor`).

    Returns:
        The metrics dict of :meth:`segkit.evaluation.confusion.ConfusionMatrix.compute`,
        with the checkpoint's class names.

    Raises:
        SegkitError: unreadable checkpoint or data, or a class count that differs.
    """
    from segkit.prediction.predictor import Predictor

    read = {name: options.pop(name) for name in READ_KEYWORDS if name in options}
    predictor = Predictor.from_checkpoint(checkpoint, device=device, **options)
    ignore = predictor.ignore_index if ignore_index is None else ignore_index
    name = data if isinstance(data, (str, Path)) else None
    source: Any = open_evaluation_source(data, split, ignore, **read) if name is not None else data
    if val_split is None and split is None and name is not None:
        val_split = held_out_by_the_run(predictor.card, Path(name), source)
    indices = None
    if val_split is not None:
        from segkit.data.sources import split_by_name

        indices = split_by_name([sample.name for sample in source.samples], val_split)[1]
    return evaluate_predictor(
        predictor, source, indices=indices, ignore_index=ignore, source_name=name, on_image=on_image
    )
