"""A self-contained HTML report of an evaluation (``segkit evaluate --report``, ``segkit report``).

One file that opens from disk with no network: every image is embedded as a ``data:``
URI and the little JavaScript (sorting the per-image table) is inline. It holds a
summary, the per-class metrics with their definitions, the row-normalised confusion
matrix as a heat map (counts on hover and in a table), the training curves from the
model card's history, the per-image scores and the worst images as image / truth /
prediction overlays with an error map. The page is rendered by Jinja2 (autoescaped) from
``templates/report.html.j2``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segkit.checkpoint import ModelCard
from segkit.data.classes import background_index, default_palette, read_class_list
from segkit.evaluation.per_image import ImagePixels, ImageScore, PerImageScores
from segkit.files import atomic_write
from segkit.version import __version__
from segkit.visualize import PALETTE, colorize, overlay

SUMMARY = (
    ("mIoU", "mIoU"),
    ("pixel accuracy", "pixel_accuracy"),
    ("mDice", "mDice"),
    ("fwIoU", "fwIoU"),
    ("mean precision", "mean_precision"),
    ("mean recall", "mean_recall"),
)
DEFINITIONS = (
    (
        "TP, FP, FN, TN",
        "For class c of the confusion matrix cm (rows truth, columns prediction, ignored pixels left "
        "out): TP = cm[c, c], FP = column sum − TP, FN = row sum − TP, TN = all − TP − FP − FN.",
    ),
    ("IoU (Jaccard)", "TP / (TP + FP + FN)"),
    ("Dice (F1)", "2·TP / (2·TP + FP + FN)"),
    ("precision", "TP / (TP + FP)"),
    ("recall", "TP / (TP + FN) (class accuracy)"),
    ("specificity", "TN / (TN + FP)"),
    ("pixel accuracy", "Σ TP / all labelled pixels"),
    (
        "mIoU, mDice, mean …",
        "the mean over the classes where the value is defined; a ratio whose denominator is 0 is "
        "undefined (–) and left out",
    ),
    ("fwIoU", "Σ_c (TP_c + FN_c) / all · IoU_c (IoU weighted by the class's share of the true pixels)"),
)
logger = logging.getLogger(__name__)

MAX_CLASS_COLUMNS = 12  # per-class IoU columns in the per-image table up to this many classes
ALPHA = 0.5


def write_report(path: str | Path, metrics: Mapping[str, Any], **options: Any) -> None:
    """Write :func:`render_report`'s page as one HTML file, atomically (``options`` as there)."""
    html = render_report(metrics, **options)
    atomic_write(path, lambda temp: temp.write_text(html, encoding="utf-8"))


def render_report(
    metrics: Mapping[str, Any],
    *,
    scores: PerImageScores | None = None,
    card: ModelCard | None = None,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    ignore_index: int = 255,
    sources: Sequence[tuple[str, str]] = (),
    note: str = "",
    title: str = "segkit evaluation report",
) -> str:
    """The report of an evaluation as the text of one self-contained HTML page.

    Args:
        metrics: the dict of :func:`~segkit.evaluation.metrics.compute_metrics`.
        scores: per-image scores and worst images collected during the evaluation.
        card: the model card (its facts, colours and training curves are shown).
        palette: class colours when there is no card (default: :func:`~segkit.data.classes.default_palette`).
        ignore_index: mask value of ignored pixels (drawn white).
        sources: ``(label, value)`` pairs saying what was evaluated.
        note: a remark shown at the top.
        title: the page title.
    """
    from segkit.plots import best_epoch_of, curves_png, race_png

    names = list(metrics["per_class"])
    if card is not None:
        colours = np.asarray(card.palette, dtype=np.uint8)
        background = card.background
    else:
        colours = default_palette(names) if palette is None else np.asarray(palette, dtype=np.uint8)[: len(names)]
        background = background_index(names)
    history = card.training.history if card is not None else []
    race = dict(card.training.plan.get("race") or {}) if card is not None else {}
    best_epoch = ((card is not None and card.training.best_epoch) or best_epoch_of(history)) if history else None
    context = {
        "title": title,
        "sources": list(sources),
        "note": note,
        "summary": [(label, _number(metrics.get(key))) for label, key in SUMMARY],
        "counted": _counted(metrics),
        "classes": _class_rows(metrics, colours),
        "absent": list(metrics.get("classes_absent", [])),
        "definitions": DEFINITIONS,
        "class_names": names,
        "confusion": _confusion_rows(metrics),
        "curves": _data_uri(curves_png(history, best_epoch), "image/png") if history else "",
        "race": race_rows(race),
        "race_chart": _data_uri(race_png(race), "image/png") if race_rows(race) else "",
        "race_note": _race_note(race),
        "best_epoch": best_epoch,
        "images": [] if scores is None else sorted(scores.scores, key=_ascending_miou),
        "image_classes": names if len(names) <= MAX_CLASS_COLUMNS else [],
        "worst": []
        if scores is None
        else [
            _worst_item(score, pixels, names, colours, background, ignore_index)
            for score, pixels in scores.worst_images()
        ],
        "card": _card_facts(card) if card is not None else [],
        "card_json": _card_json(card) if card is not None else "",
    }
    return render_page("report.html.j2", context)


def render_page(template: str, context: Mapping[str, Any], package: str = "segkit.evaluation") -> str:
    """Render one self-contained page in the report's style: ``template`` of ``package``'s ``templates/``.

    The report's templates (its stylesheet ``style.css`` and the table sorting ``sort_table.js``,
    for a table with ``id="per-image"``) can be included from any package's template; the
    filters ``num`` (four decimals, or – when undefined) and ``sortkey`` and the variables
    ``version`` and ``created`` are there too.
    """
    import jinja2

    loaders = [jinja2.PackageLoader(name, "templates") for name in dict.fromkeys((package, "segkit.evaluation"))]
    environment = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["num"] = _number
    environment.filters["sortkey"] = lambda value: "" if _undefined(value) else f"{value:.6f}"
    values = {"version": __version__, "created": datetime.now().strftime("%Y-%m-%d %H:%M"), **context}
    return environment.get_template(template).render(values)


def race_rows(race: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per candidate of a planning race that ran: label, scores by rung, steps, seconds, outcome."""
    if not race.get("raced"):
        return []
    rows = []
    for index, entry in enumerate(race.get("entries", [])):
        rungs = entry.get("rungs", [])
        if index == race.get("winner"):
            outcome = "won: training went on with it"
        elif entry.get("error"):
            outcome = f"stopped: {entry['error']}"
        else:
            outcome = f"stopped after rung {int(entry.get('eliminated') or 0) + 1}"
        rows.append(
            {
                "label": entry["label"],
                "scores": " → ".join(_number(rung.get("score")) for rung in rungs) or "–",
                "steps": rungs[-1]["steps"] if rungs else 0,
                "seconds": f"{float(entry.get('seconds', 0.0)):.0f}",
                "outcome": outcome,
                "won": index == race.get("winner"),
            }
        )
    return rows


def _race_note(race: Mapping[str, Any]) -> str:
    if race.get("raced"):
        return (
            f"Each candidate trained {float(race.get('slice_seconds', 0.0)):.0f} s first on the training images and was "
            f"scored on {len(race.get('validation_images', []))} validation images at their original size; the better "
            f"half went on with twice the time. The losers took {float(race.get('loser_seconds', 0.0)):.0f} s "
            f"({100 * float(race.get('loser_share', 0.0)):.0f} % of the budget)."
        )
    return f"No race: {race['skipped']}." if race.get("skipped") else ""


def _undefined(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> str:
    """Four decimals, or an en dash for an undefined (None/NaN) value."""
    return "–" if _undefined(value) else f"{value:.4f}"


def _ascending_miou(score: ImageScore) -> tuple[bool, float]:
    return (math.isnan(score.miou), 0.0 if math.isnan(score.miou) else score.miou)


def _counted(metrics: Mapping[str, Any]) -> str:
    images = metrics.get("num_images")
    prefix = f"{images} images, " if images is not None else ""
    return f"{prefix}{metrics['num_pixels']:,} labelled pixels, {metrics['num_classes']} classes."


def hex_colour(colour: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(value) for value in colour))


def _class_rows(metrics: Mapping[str, Any], colours: np.ndarray) -> list[dict[str, Any]]:
    """One row per class: its colour, metrics, true and predicted pixels, and whether it failed."""
    matrix = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    predicted = matrix.sum(axis=0)
    total = max(int(metrics["num_pixels"]), 1)
    rows = []
    for index, (name, values) in enumerate(metrics["per_class"].items()):
        iou = values["iou"]
        state = "absent" if name in metrics.get("classes_absent", []) else "zero" if iou == 0 else ""
        rows.append(
            {
                **values,
                "name": name,
                "colour": hex_colour(colours[index]),
                "state": state,
                "bar": 0 if _undefined(iou) else round(80 * iou),
                "share": f"{values['support'] / total:.2%}",
                "predicted": int(predicted[index]),
            }
        )
    return rows


def _confusion_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Heat-map cells: the share of the true class's pixels, a colour for it, and the count."""
    matrix = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    names = list(metrics["per_class"])
    rows = []
    for truth, name in enumerate(names):
        total = int(matrix[truth].sum())
        cells = []
        for predicted, other in enumerate(names):
            count = int(matrix[truth, predicted])
            share = count / total if total else 0.0
            lightness = 97 - 62 * share  # white-ish (0 %) to deep blue (100 %)
            cells.append(
                {
                    "count": count,
                    "diagonal": truth == predicted,
                    "text": "" if not total else f"{share:.0%}" if share >= 0.005 or not count else "<1%",
                    "background": f"hsl(222, 70%, {lightness:.1f}%)",
                    "color": "#ffffff" if share > 0.45 else "#1c1f26",
                    "title": f"truth {name} → predicted {other}: {count:,} pixels"
                    + (f" ({share:.2%} of {name})" if total else ""),
                }
            )
        rows.append({"name": name, "cells": cells, "total": total})
    return rows


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_uri(array: np.ndarray, photo: bool) -> str:
    """An RGB array as a data URI: JPEG for photos, PNG (exact colours) for masks."""
    buffer = io.BytesIO()
    if photo:
        Image.fromarray(array).save(buffer, format="JPEG", quality=85)
        return _data_uri(buffer.getvalue(), "image/jpeg")
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return _data_uri(buffer.getvalue(), "image/png")


def error_map(truth: np.ndarray, prediction: np.ndarray, ignore_index: int) -> np.ndarray:
    """Wrong pixels red, right ones light grey, ignored ones white: ``(H, W, 3)`` uint8."""
    result = np.full((*truth.shape, 3), 215, dtype=np.uint8)
    result[truth != prediction] = (214, 39, 40)
    result[truth == ignore_index] = PALETTE[255]
    return result


def _worst_item(
    score: ImageScore,
    pixels: ImagePixels,
    names: Sequence[str],
    colours: np.ndarray,
    background: int | None,
    ignore_index: int,
) -> dict[str, Any]:
    """One gallery entry: the image and overlays of truth and prediction (colour masks without an image)."""
    panels: list[tuple[str, str]] = []
    if pixels.image is not None:
        panels.append(("image", image_uri(pixels.image, photo=True)))
        for caption, mask in (("truth", pixels.truth), ("prediction", pixels.prediction)):
            panels.append((caption, image_uri(overlay(pixels.image, mask, ALPHA, colours, background), photo=True)))
    else:
        for caption, mask in (("truth", pixels.truth), ("prediction", pixels.prediction)):
            panels.append((caption, image_uri(colorize(mask, colours), photo=False)))
    panels.append(("errors (red)", image_uri(error_map(pixels.truth, pixels.prediction, ignore_index), photo=False)))
    defined = [(iou, name) for iou, name in zip(score.iou, names) if not math.isnan(iou)]
    weakest = min(defined)[1] if defined else ""
    return {
        "name": score.name,
        "miou": score.miou,
        "pixel_accuracy": score.pixel_accuracy,
        "weakest": weakest,
        "panels": panels,
    }


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _card_facts(card: ModelCard) -> list[tuple[str, str]]:
    """The model card's facts a person reads first."""
    spec, preprocess, training = card.model, card.preprocess, card.training
    options = ", ".join(f"{key}={value}" for key, value in spec.kwargs.items())
    facts = [
        ("model", f"{spec.name}" + (f" ({options})" if options else "")),
        ("classes", ", ".join(card.classes)),
        (
            "mode",
            f"binary (one sigmoid channel, threshold {card.threshold:g})"
            if card.binary
            else f"multi-class (softmax over {card.num_classes} classes)",
        ),
        (
            "input",
            f"{preprocess.img_size[1]}×{preprocess.img_size[0]} ({preprocess.resize}), {spec.in_channels} channels",
        ),
        ("ignore value", str(card.ignore_index)),
        ("background class", "none" if card.background is None else card.classes[card.background]),
    ]
    if training.epoch:
        from segkit.plots import best_epoch_of

        best_epoch = training.best_epoch or best_epoch_of(training.history)
        best = f"epoch {best_epoch}" if best_epoch else "–"
        if training.best_metric is not None:
            best += f", validation mIoU {training.best_metric:.4f}"
        seconds = training.seconds or sum(float(row.get("seconds") or 0) for row in training.history)
        facts += [
            ("trained", f"{training.epoch} epochs" + (f" in {_duration(seconds)}" if seconds else "")),
            ("best", best),
        ]
    config = training.config
    if config:
        recipe = ", ".join(
            f"{key} {config[key]}"
            for key in ("optimizer", "lr", "batch_size", "loss", "scheduler")
            if config.get(key) is not None
        )
        facts.append(("recipe", recipe))
    data = training.data or ({"folder": config["data"]} if config.get("data") else {})
    if data:
        facts.append(("training data", ", ".join(f"{key}: {value}" for key, value in data.items())))
    facts.append(("segkit", card.segkit_version))
    return facts


def _card_json(card: ModelCard) -> str:
    """The card as indented JSON, without the per-epoch history (shown as curves)."""
    values = card.to_dict()
    values["training"] = {key: value for key, value in values["training"].items() if key != "history"}
    return json.dumps(values, indent=2)


def model_card(model: str | Path) -> ModelCard:
    """The card of any model segkit predicts with (``.pt``, ``.onnx``, exported folder)."""
    from segkit.prediction.predictor import Predictor

    return Predictor.from_checkpoint(model, device="cpu").card


def write_evaluation_report(
    path: str | Path,
    metrics: Mapping[str, Any],
    scores: PerImageScores | None,
    *,
    checkpoint: str | Path | None = None,
    data: str | Path | None = None,
    pred: str | Path | None = None,
    true: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
    ignore_index: int | None = None,
    val_split: float | None = None,
) -> None:
    """The report of ``segkit evaluate`` (checkpoint form, or ``--pred``/``--true`` form).

    ``ignore_index`` defaults to the checkpoint's (255 in the ``--pred`` form).
    """
    if checkpoint is not None:
        where = str(data) + (f" (held out {val_split:g})" if val_split else "")
        card = model_card(checkpoint)
        write_report(
            path,
            metrics,
            scores=scores,
            card=card,
            ignore_index=card.ignore_index if ignore_index is None else ignore_index,
            sources=[("model", str(checkpoint)), ("data", where)],
        )
        return
    ignore_index = 255 if ignore_index is None else ignore_index
    palette = None
    if classes is not None:  # the dataset's colours when the class list is a colour table
        table = read_class_list(classes, ignore_index=ignore_index).color_table
        palette = None if table is None else table.class_colors(metrics["num_classes"])
    write_report(
        path,
        metrics,
        scores=scores,
        palette=palette,
        ignore_index=ignore_index,
        sources=[("predicted masks", str(pred)), ("true masks", str(true))],
    )
