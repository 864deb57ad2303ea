"""``segkit suggest``: which unlabelled images are worth a person's time next (active learning).

Each image is predicted at its original size (tiled where the model tiles) and scored by
how unsure the model is, where it matters:

- **uncertainty**: the mean per-pixel entropy of the class probabilities, divided by
  ``log(C)`` (0: certain everywhere, 1: uniform);
- **away from outlines**: pixels near a predicted outline (within :data:`OUTLINE_NETWORK_PIXELS`
  of the network's input pixels, in the image's own) do not count: every model is unsure along
  the edges of what it finds, so there the entropy measures how much outline an image has
  (groups, small objects) rather than what the model has not learnt; doubt inside regions (a
  missed object, a class it confuses) is what a label teaches;
- **weak classes**: each pixel's entropy is weighted by how badly the model does on the
  class it predicts there, from the checkpoint's validation IoU (``0.5 + 1 - IoU``): doubt
  about a class the model already handles counts for less;
- **typicality**: the score is multiplied by how typical the image is of the pool (its kernel
  density among the candidates' class layouts, relative to the most typical one), as in
  information-density sampling: an outlier the model is unsure of is one it cannot learn
  much from yet (the cold-start weakness of plain uncertainty sampling);
- **diversity**: picks are chosen greedily by score times the distance to the images
  already picked (uncertainty-weighted k-center greedy, as in core-set active learning),
  on each image's predicted class layout (the probabilities pooled to a 4 x 4 grid). A
  near-duplicate of a picked image is far down the list, whatever its score. The layout
  is what every backend gives, so ``.pt``, exported folders and ``.onnx`` models rank alike.

Pre-labels for the picks are the model's masks as labelme annotations, to correct in
labelme and ``segkit convert`` back.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segkit.errors import OptionError, SegkitError
from segkit.files import atomic_write, built_into, check_out_folder, check_output_path
from segkit.labelling.outputs import STAGING_PREFIX, write_csv, write_json

logger = logging.getLogger(__name__)

GRID = 4  # the class layout is pooled to GRID x GRID cells per class
SHEET_SIDE = 256  # longer side of each picture on the contact sheet
UNKNOWN_IOU = 0.5  # a class the checkpoint has no validation IoU for is weighted as a middling one
DENSITY_SAMPLE = 2000  # typicality is measured against at most this many candidates (evenly spaced)
OUTLINE_NETWORK_PIXELS = 2  # pixels this near a predicted outline (in the network's input pixels) do not count


@dataclass
class Suggestion:
    """One picked image and why.

    Attributes:
        image: the image file.
        score: what ranks it: the weighted uncertainty times the typicality (the order of the picks also
            weighs diversity).
        uncertainty: mean normalised entropy of its probabilities (0 certain, 1 uniform).
        typicality: its density among the candidates' class layouts, relative to the most typical (0 .. 1).
        distance: distance of its class layout to the images picked before it (1 for the first pick).
        classes: share of its pixels predicted as each class.
        reason: one line: what made it worth labelling.
    """

    image: Path
    score: float
    uncertainty: float
    typicality: float
    distance: float
    classes: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["image"] = str(self.image)
        return values


@dataclass
class SuggestResult:
    """The ranked picks, best first; ``out`` is the folder written (or None)."""

    picks: list[Suggestion]
    candidates: int
    out: Path | None = None
    unreadable: list[str] = field(default_factory=list)

    def to_list(self) -> list[dict[str, Any]]:
        """The ranking as ``--json`` writes it: a list, best first, each with ``image`` and ``score``."""
        return [pick.to_dict() for pick in self.picks]

    def format(self) -> str:
        """A table for the command line: rank, image, score, uncertainty, reason."""
        lines = [f"{len(self.picks)} of {self.candidates} images to label next, best first:"]
        width = max([len(pick.image.name) for pick in self.picks] + [5])
        for rank, pick in enumerate(self.picks, start=1):
            lines.append(f"{rank:>4}  {pick.image.name:<{width}}  score {pick.score:.3f}  {pick.reason}")
        if self.out is not None:
            lines.append(f"wrote {self.out}: the images, their pre-labels (labelme JSON), suggestions.csv, sheet.jpg")
        return "\n".join(lines)


@dataclass
class _Scored:
    image: Path
    score: float
    uncertainty: float
    layout: np.ndarray
    shares: np.ndarray
    weak: str


def class_weights(card: Any) -> np.ndarray:
    """``0.5 + (1 - IoU)`` per class from the checkpoint's validation metrics (:data:`UNKNOWN_IOU` when unknown)."""
    per_class = (card.training.metrics or {}).get("per_class", {})
    ious = []
    for name in card.classes:
        iou = per_class.get(name, {}).get("iou")
        ious.append(UNKNOWN_IOU if iou is None or (isinstance(iou, float) and math.isnan(iou)) else float(iou))
    return 0.5 + (1.0 - np.clip(np.asarray(ious, dtype=np.float64), 0.0, 1.0))


def score_probabilities(
    probabilities: np.ndarray, weights: np.ndarray, reach: int
) -> tuple[float, float, np.ndarray, np.ndarray, int]:
    """``(score, uncertainty, layout, class shares, most doubted class)`` of one ``(C, H, W)`` probability map.

    The score is the mean over pixels of the normalised entropy times the weight of the
    predicted class, pixels within ``reach`` of a predicted outline (:func:`near_outlines`) counted as certain; the
    layout is the probabilities pooled to a ``GRID x GRID`` grid, unit length; the most doubted class
    is the one whose predicted pixels hold most of the score.
    """
    classes = probabilities.shape[0]
    clipped = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    entropy = -(clipped * np.log(clipped)).sum(axis=0) / math.log(max(classes, 2))
    predicted = probabilities.argmax(axis=0)
    doubt = np.where(near_outlines(predicted, reach), 0.0, entropy * weights[predicted])
    score = float(doubt.mean())
    doubted = int(np.argmax(np.bincount(predicted.ravel(), weights=doubt.ravel(), minlength=classes)))
    shares = np.bincount(predicted.ravel(), minlength=classes)[:classes] / predicted.size
    height, width = predicted.shape
    rows = np.array_split(np.arange(height), GRID)
    cols = np.array_split(np.arange(width), GRID)
    layout = np.array(
        [
            [
                probabilities[:, r[:, None], c].mean(axis=(1, 2)) if len(r) and len(c) else np.zeros(classes)
                for c in cols
            ]
            for r in rows
        ]  # fmt: skip
    ).ravel()
    norm = np.linalg.norm(layout)
    return score, float(entropy.mean()), layout / norm if norm else layout, shares, doubted


def outline_reach(preprocess: Any, height: int, width: int) -> int:
    """:data:`OUTLINE_NETWORK_PIXELS` of the network's input in pixels of a ``height x width`` image (at least 1)."""
    from segkit.data.transforms import compute_geometry

    geometry = compute_geometry(height, width, preprocess.img_size, preprocess.resize, preprocess.scale)
    return max(1, round(OUTLINE_NETWORK_PIXELS / geometry.scale))


def near_outlines(predicted: np.ndarray, reach: int) -> np.ndarray:
    """Pixels of a ``(H, W)`` class map within ``reach`` pixels of a pixel of another class: those whose disc of
    radius ``reach`` holds two classes (its largest and smallest class differ)."""
    classes = predicted.astype(np.uint16)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    return cv2.dilate(classes, disc) != cv2.erode(classes, disc)


def typicality(layouts: np.ndarray) -> np.ndarray:
    """Each layout's Gaussian kernel density among the layouts (``exp(-d^2 / h)``, ``h`` the median squared
    distance between them), divided by the largest: 1 for the most typical image, near 0 for an outlier."""
    reference = layouts[np.linspace(0, len(layouts) - 1, min(len(layouts), DENSITY_SAMPLE)).astype(int)]
    norms = (layouts**2).sum(axis=1)
    squared = np.maximum(norms[:, None] + (reference**2).sum(axis=1)[None, :] - 2 * layouts @ reference.T, 0.0)
    bandwidth = float(np.median(squared[squared > 0])) if (squared > 0).any() else 1.0
    density = np.exp(-squared / bandwidth).mean(axis=1)
    return density / density.max()


def pick_diverse(scored: Sequence[_Scored], count: int) -> list[tuple[int, float]]:
    """Uncertainty-weighted k-center greedy: ``(index, distance)`` of ``count`` picks, in the order picked.

    The first pick is the highest score; each next one maximises score x distance of its layout
    to the nearest pick so far, so an image like one already picked ranks low.
    """
    if not scored:
        return []
    layouts = np.stack([item.layout for item in scored])
    scores = np.array([item.score for item in scored])
    first = int(np.argmax(scores))
    picks = [(first, 1.0)]
    nearest = np.linalg.norm(layouts - layouts[first], axis=1)
    while len(picks) < min(count, len(scored)):
        value = scores * nearest
        value[[index for index, _ in picks]] = -1.0
        best = int(np.argmax(value))
        if value[best] < 0:
            break
        picks.append((best, float(nearest[best])))
        nearest = np.minimum(nearest, np.linalg.norm(layouts - layouts[best], axis=1))
    return picks


def suggest(
    model: str | Path,
    unlabeled: str | Path | Sequence[str | Path],
    *,
    count: int = 10,
    out: str | Path | None = None,
    json: str | Path | None = None,
    overwrite: bool = False,
    **prediction: Any,
) -> SuggestResult:
    """Rank unlabelled images by how much labelling them should help the model: ``segkit suggest``.

    Args:
        model: a ``.pt`` checkpoint, an exported ``.onnx`` model or a ``--format hf`` folder.
        unlabeled: image files, folders or globs (as ``segkit predict`` takes them).
        count: how many images to pick.
        out: also write a folder: the picked images, their pre-labels as labelme JSON (the
            model's masks, to correct in labelme and ``segkit convert`` back) and ``labels.txt``,
            ``suggestions.csv`` and ``suggestions.json`` (the ranking) and ``sheet.jpg`` (the picks
            with their predicted masks).
        json: write the ranking here: a list, best first, each ``{"image", "score", ...}``.
        overwrite: replace a non-empty ``out``.
        **prediction: how the model predicts, as :func:`segkit.predict`'s (``device``, ``batch_size``,
            ``tile``, ``tta`` ...).

    Returns:
        A :class:`SuggestResult` (``.picks`` best first, ``.format()``, ``.to_list()``).

    Raises:
        OptionError: ``count`` below 1.
        SegkitError: no images, an unreadable model, no readable image, or outputs over the inputs.

    Example:
        >>> import segkit
        >>> result = segkit.suggest("runs/exp/best.pt", "unlabeled/", count=20, out="to_label/")
        >>> [pick.image.name for pick in result.picks]
    """
    from segkit.prediction.options import PredictionOptions
    from segkit.prediction.predictor import load_predictor
    from segkit.prediction.writer import expand_inputs, unreadable_images

    if count < 1:
        raise OptionError(f"--count must be at least 1, not {count}")
    patterns = [unlabeled] if isinstance(unlabeled, (str, Path)) else list(unlabeled)
    inputs = expand_inputs(patterns)
    for output, option in ((out, "--out"), (json, "--json")):
        if output is not None:
            check_output_path(output, [*patterns, model], option)
    if out is not None:
        check_out_folder(out, overwrite)
    bad = unreadable_images(inputs)
    skipped = {str(error.path) for error in bad}
    inputs = [path for path in inputs if str(path) not in skipped]
    if not inputs:
        raise SegkitError(
            bad[0].path if bad else None, f"{bad[0].problem if bad else 'no images'}; no readable image to rank"
        )
    for error in bad:
        logger.warning("%s: %s; left out", error.path, error.problem)
    predictor = load_predictor(model, **PredictionOptions(**prediction).predictor_kwargs())
    weights = class_weights(predictor.card)
    scored = []
    for path in inputs:
        probabilities = predictor.predict_proba(path)
        reach = outline_reach(predictor.card.preprocess, *probabilities.shape[1:])
        score, uncertainty, layout, shares, doubted = score_probabilities(probabilities, weights, reach)
        scored.append(_Scored(path, score, uncertainty, layout, shares, predictor.classes[doubted]))
    typical = typicality(np.stack([item.layout for item in scored]))
    for item, value in zip(scored, typical):
        item.score *= float(value)
    picks: list[Suggestion] = []
    for index, distance in pick_diverse(scored, count):
        item = scored[index]
        predicted = {name: round(float(share), 4) for name, share in zip(predictor.classes, item.shares) if share > 0}
        reason = f"mean entropy {item.uncertainty:.2f}, most doubt where it predicts {item.weak}"
        if distance < 0.05 and picks:
            reason += "; much like an earlier pick"
        rounded = (
            round(item.score, 6),
            round(item.uncertainty, 6),
            round(float(typical[index]), 6),
            round(distance, 6),
        )
        picks.append(Suggestion(item.image, *rounded, predicted, reason))
    result = SuggestResult(picks, len(scored), None, sorted(skipped))
    if json is not None:
        write_json(json, result.to_list())
    if out is not None:
        result.out = _write_folder(Path(out), result, predictor, overwrite)
    return result


def _write_folder(out: Path, result: SuggestResult, predictor: Any, overwrite: bool) -> Path:
    """The picks, their labelme pre-labels, the ranking and the contact sheet, moved into ``out`` when complete."""
    from segkit.data.classes import default_palette
    from segkit.data.io import read_image, write_image
    from segkit.data.labelme import LABELS_FILE
    from segkit.prediction.labelme_export import (
        LabelmeOptions,
        label_list,
        labelme_document,
        write_labelme,
    )
    from segkit.visualize import fit_within, labelled_grid, legend, overlay

    # pre-labels keep every region the model predicts (no specks dropped): they convert back to its masks
    exact = LabelmeOptions(min_area=0)
    with built_into(out, STAGING_PREFIX) as staging:
        rows = []
        palette = predictor.palette if predictor.palette is not None else default_palette(predictor.classes)
        for rank, pick in enumerate(result.picks, start=1):
            target = staging / pick.image.name
            shutil.copyfile(pick.image, target)
            image = read_image(pick.image)
            mask = predictor.predict(image)
            document = labelme_document(mask, predictor.classes, out / pick.image.name, out, image=image,
                                        background=predictor.background, options=exact)  # fmt: skip
            write_labelme(staging / f"{pick.image.stem}.json", document)
            shown = fit_within(image, SHEET_SIDE)
            drawn = fit_within(overlay(image, mask, 0.5, palette, predictor.background), SHEET_SIDE)
            rows.append(([shown, drawn], f"{rank}. {pick.image.name}  score {pick.score:.3f}"))
        labels = label_list(predictor.classes)
        atomic_write(staging / LABELS_FILE, lambda temp: temp.write_text(labels, encoding="utf-8"))
        write_json(staging / "suggestions.json", result.to_list())
        write_csv(
            staging / "suggestions.csv",
            ["rank", "image", "score", "uncertainty", "typicality", "distance", "reason"],
            (
                [rank, pick.image.name, pick.score, pick.uncertainty, pick.typicality, pick.distance, pick.reason]
                for rank, pick in enumerate(result.picks, start=1)
            ),
        )
        sheet = labelled_grid(
            [cells for cells, _ in rows],
            column_titles=["image", "the model's mask (pre-label)"],
            row_titles=[title for _, title in rows],
            title=f"{len(rows)} images to label next, best first",
            footer=legend(predictor.classes, palette[: len(predictor.classes)], width=2 * SHEET_SIDE),
        )
        write_image(staging / "sheet.jpg", sheet)
    return out
