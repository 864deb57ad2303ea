"""``segkit audit``: which masks of a labelled dataset are probably wrong, and where.

Every image needs class probabilities from a model that did not learn its mask:

- **K-fold training** (the default): the images are dealt into K folds by sorted name; for
  each fold a model trains on the other folds' images through :func:`segkit.train` (planned,
  with its share of the time budget; it holds out its own validation images from them) and
  predicts the fold's images at their original size, as ``segkit predict`` does;
- or a given **model**, whose scores are optimistic on the images it trained on (said once).

Each image then gets a **label-quality score**: cleanlab's (its segmentation module's
:func:`cleanlab.segmentation.rank.get_label_quality_scores`: the soft minimum of each
labelled pixel's probability of its label; 0 surely wrong, 1 surely right; ignored pixels
are left out) times the **outline agreement** (:mod:`segkit.labelling.outlines`: ``(1 -
g)^2``, where ``g`` is the largest share of an object's outline that one shift or growth
brings onto the model's, so that a polygon drawn a few pixels off ranks low) times the **edge
agreement** (:mod:`segkit.labelling.edges`: whether an object's outline would lie on stronger
edges of the photo drawn elsewhere, weighed by how often this dataset's outlines lie on its
photos' edges at all; model-free, so it works as well where the model's own outlines wander), and each
**disputed region** — a connected patch where the model finds its class at least
:data:`~segkit.labelling.regions.MARGIN` more probable than the label's — a kind:
``missing``, ``extra``, ``wrong_class`` or ``boundary`` (:mod:`segkit.labelling.regions`).

cleanlab scores pixels; it has no notion of objects, outlines or regions and their kinds,
which are written by hand (:mod:`segkit.labelling.outlines`, :mod:`segkit.labelling.edges`,
:func:`~segkit.labelling.regions.disputed_regions`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.options import READ_KEYWORDS
from segkit.errors import OptionError, SegkitError
from segkit.files import built_into, check_out_folder, check_output_path
from segkit.labelling.edges import EdgeFit, edge_agreement, edge_fits, edge_reliability
from segkit.labelling.folds import Predicted, fixed_copy, out_of_sample
from segkit.labelling.options import DEFAULT_BUDGET, DEFAULT_FOLDS
from segkit.labelling.outlines import OutlineFit, outline_agreement, outline_fits
from segkit.labelling.outputs import STAGING_PREFIX, write_csv, write_json
from segkit.labelling.regions import KINDS, Region, disputed_regions, label_quality

logger = logging.getLogger(__name__)

DISPLAY_SIDE = 480  # the page's images are shrunk to fit this many pixels
# outline colours (RGB) of the regions on the page, one per kind, bright against most photos
KIND_COLOURS = {
    "missing": (255, 0, 255),
    "extra": (255, 214, 0),
    "wrong_class": (255, 59, 48),
    "boundary": (0, 229, 255),
}
IN_SAMPLE_NOTE = (
    "Probabilities of a given model: on the images it trained on it has learnt their masks, errors included, so "
    "these scores are optimistic. Without --model, K-fold training scores every image with a model that never saw it."
)


@dataclass
class AuditedImage:
    """One image's verdict.

    Attributes:
        image: the image file (a labelme sample: its JSON file).
        mask: the file holding its labels, the one to correct.
        score: its label quality, 0 (surely wrong) to 1: cleanlab's times the outline and edge agreements.
        regions: the disputed regions, largest first.
        fold: the fold whose model predicted it (None with a given model).
        outline: the object whose outline a shift or growth brings most onto the model's (None: no object
            the model sees with an outline long enough to fit).
        edges: the object whose outline a shift or growth brings most onto the photo's edges (None: no object
            large enough to fit).
    """

    image: Path
    mask: Path
    score: float
    regions: list[Region] = field(default_factory=list)
    fold: int | None = None
    outline: OutlineFit | None = None
    edges: EdgeFit | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image.name,
            "score": round(self.score, 6),
            "path": str(self.image),
            "mask": str(self.mask),
            "fold": self.fold,
            "regions": [region.to_dict() for region in self.regions],
            "outline": self.outline.to_dict() if self.outline is not None else None,
            "edges": self.edges.to_dict() if self.edges is not None else None,
        }

    def summary(self, limit: int = 3) -> str:
        """The largest regions in one line, or ``no disputed region``."""
        if not self.regions:
            return "no disputed region"
        more = len(self.regions) - limit
        return "; ".join(region.describe() for region in self.regions[:limit]) + (f"; {more} more" if more > 0 else "")


@dataclass
class AuditResult:
    """The images, most suspect (lowest score) first, where the probabilities came from, and the data's edge
    reliability (the share of its masks whose outlines all lie on the photo's edges)."""

    images: list[AuditedImage]
    probabilities: str
    out: Path | None = None
    top: int = 10
    edge_reliability: float = 0.0

    def to_list(self) -> list[dict[str, Any]]:
        """The ranking as ``--json`` writes it: a list, most suspect first, each with ``image``, ``score``, ``regions``."""
        return [image.to_dict() for image in self.images]

    def kind_counts(self) -> dict[str, int]:
        """How many regions of each kind were found, over all images."""
        counts = dict.fromkeys(KINDS, 0)
        for image in self.images:
            for region in image.regions:
                counts[region.kind] += 1
        return counts

    def format(self) -> str:
        """The most suspect ``top`` images for the command line: rank, image, score, largest regions."""
        counts = ", ".join(f"{count} {kind}" for kind, count in self.kind_counts().items())
        lines = [
            f"{len(self.images)} masks audited ({self.probabilities}); disputed regions: {counts}; "
            f"outlines on the photo's edges in {self.edge_reliability:.0%} of the masks",
            "most suspect first (score: label quality, 0 surely wrong .. 1):",
        ]
        shown = self.images[: self.top]
        width = max([len(item.image.name) for item in shown] + [5])
        for rank, item in enumerate(shown, start=1):
            edges = f"; {item.edges.describe()}" if item.edges is not None and item.edges.gain > 0 else ""
            lines.append(f"{rank:>4}  {item.image.name:<{width}}  score {item.score:.3f}  {item.summary()}{edges}")
        if len(self.images) > len(shown):
            lines.append(f"      ... {len(self.images) - len(shown)} more")
        if self.out is not None:
            lines.append(f"wrote {self.out}: audit.html (the {len(shown)} most suspect), audit.json, audit.csv")
        return "\n".join(lines)


# ------------------------------------------------------------------------- the data set
@dataclass
class _Shown:
    """The panels of one of the most suspect images, shrunk to :data:`DISPLAY_SIDE`."""

    image: np.ndarray
    labels: np.ndarray
    prediction: np.ndarray
    outlined: np.ndarray


@dataclass
class _MostSuspect:
    """The ``top`` lowest-scoring images' panels, kept while the others pass by (memory stays bounded)."""

    top: int
    _heap: list[tuple[float, int, str, _Shown]] = field(default_factory=list)
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def offer(self, name: str, score: float, shown: Callable[[], _Shown]) -> None:
        """Keep ``shown()`` (made only then) when ``score`` is among the ``top`` lowest so far."""
        if len(self._heap) == self.top and -self._heap[0][0] <= score:
            return
        entry = (-score, next(self._counter), name, shown())
        if len(self._heap) < self.top:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def by_name(self) -> dict[str, _Shown]:
        return {name: shown for _, _, name, shown in self._heap}


def audit(
    data: str | Path,
    *,
    model: str | Path | None = None,
    folds: int | None = None,
    time_budget: str | float | None = None,
    json: str | Path | None = None,
    out: str | Path | None = None,
    top: int = 10,
    overwrite: bool = False,
    split: str | None = None,
    classes: Any = None,
    train_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> AuditResult:
    """Find the masks of a labelled dataset that are probably wrong: ``segkit audit``.

    Args:
        data: the labelled dataset, read as ``segkit train`` reads it.
        model: score with this model (``.pt``, ``.onnx`` or exported folder) instead of K-fold
            training; its scores are optimistic on the images it trained on (a warning says so).
        folds: K, the folds of K-fold training (default :data:`DEFAULT_FOLDS`).
        time_budget: the folds' training and prediction together (``"10m"``, or seconds; default
            :data:`DEFAULT_BUDGET`), shared evenly between the folds.
        json: write the ranking here (a list, most suspect first, each ``{"image", "score",
            "regions", ...}``) and a CSV table beside it (same name, ``.csv``).
        out: write a folder: ``audit.html`` (the ``top`` most suspect images: photo, label,
            prediction, disputed regions outlined), ``audit.json``, ``audit.csv`` and, after
            K-fold training, the folds' runs (``folds/fold_1/best.pt`` ...).
        top: how many of the most suspect images the page shows and :meth:`AuditResult.format` lists.
        overwrite: replace a non-empty ``out``.
        split: the split of a dataset with splits (default: the training split).
        classes: the class names (a file or ``"a,b,c"``), as ``segkit train --classes`` reads them.
        train_options: more options for each fold's :func:`segkit.train` (``model=``, ``img_size=`` ...;
            the planner derives the rest).
        **options: how ``data`` is read (``images``, ``masks``, ``roi_masks``, ``label_map``,
            ``fit_masks``, ``colors``) and how images are predicted, as
            :func:`segkit.predict`'s (``device``, ``batch_size``, ``tile``, ``tta`` ...).

    Returns:
        An :class:`AuditResult`: ``.images`` most suspect first, ``.format()``, ``.to_list()``.

    Raises:
        OptionError: ``folds`` below 2, ``top`` below 1, or ``folds``/``time_budget`` with ``model``.
        SegkitError: no or unreadable data, too few images for the folds, a model whose classes
            differ from the data's, or outputs over the inputs.

    Example:
        >>> import segkit
        >>> result = segkit.audit("data/", time_budget="15m", out="audit/")
        >>> [(item.image.name, item.score) for item in result.images[:5]]
    """
    import cleanlab.segmentation.rank  # noqa: F401  (before any training: a missing extra is said at once)

    from segkit.config import parse_duration
    from segkit.data.sources import open_source, usable
    from segkit.prediction.options import PredictionOptions

    if model is not None and (folds is not None or time_budget is not None):
        raise OptionError("--folds and --time-budget set up K-fold training; with --model nothing is trained")
    folds = DEFAULT_FOLDS if folds is None else folds
    if folds < 2:
        raise OptionError(f"--folds must be at least 2, not {folds}")
    if top < 1:
        raise OptionError(f"--top must be at least 1, not {top}")
    read = {name: value for name, value in options.items() if name in READ_KEYWORDS}
    if classes is not None:
        read["classes"] = classes
    prediction = PredictionOptions(**{name: value for name, value in options.items() if name not in READ_KEYWORDS})
    for output, option in ((out, "--out"), (json, "--json")):
        if output is not None:
            check_output_path(output, [data, *([model] if model is not None else [])], option)
    if json is not None and Path(json).suffix.lower() == ".csv":
        raise SegkitError(json, "--json writes a CSV table beside it; give it a .json name")
    if out is not None:
        check_out_folder(out, overwrite)
    source = usable(open_source(data, split=split, **read))
    began = time.monotonic()
    edges = _fit_to_edges(source)
    with tempfile.TemporaryDirectory(prefix="segkit-audit-") as work:
        runs = Path(work) / "runs"
        if model is None:
            if len(source) < 2 * folds:
                raise SegkitError(
                    source.root,
                    f"{len(source)} labelled images are too few for {folds}-fold training (at least {2 * folds}); "
                    "give fewer --folds, or --model",
                )
            budget = parse_duration(DEFAULT_BUDGET if time_budget is None else time_budget) - (time.monotonic() - began)
            fixed = fixed_copy(data, split, read, Path(work) / "data")
            predicted = out_of_sample(source, fixed, folds, budget, runs, train_options or {}, prediction)
            probabilities = f"{folds}-fold out-of-sample probabilities"
        else:
            predicted = _predict_all(_checked_model(model, source, prediction), source)
            probabilities = f"in-sample probabilities of {model}"
        reliability = edge_reliability(edges)
        images, shown = _score(predicted, source, top, edges, reliability)
        result = AuditResult(images, probabilities, None, top, reliability)
        if json is not None:
            write_json(json, result.to_list())
            _write_table(Path(json).with_suffix(".csv"), result)
        if out is not None:
            result.out = Path(out)
            with built_into(result.out, STAGING_PREFIX) as staging:
                write_json(staging / "audit.json", result.to_list())
                _write_table(staging / "audit.csv", result)
                _write_page(staging / "audit.html", result, shown, source, data, model)
                if runs.is_dir():
                    shutil.move(runs, staging / "folds")
    return result


def _checked_model(model: str | Path, source: Any, prediction: Any) -> Any:
    """The predictor of ``model``, refused when its classes are not the data's; warns that it scores in-sample."""
    from segkit.prediction.predictor import load_predictor

    predictor = load_predictor(model, **prediction.predictor_kwargs())
    if list(predictor.classes) != list(source.classes):
        raise SegkitError(
            model,
            f"the model's classes ({', '.join(predictor.classes)}) differ from the data's "
            f"({', '.join(source.classes)}, from {source.classes_origin or source.root}); "
            "audit with a model trained on this data, or without --model (K-fold training)",
        )
    logger.warning(
        "%s: in-sample scores are optimistic: a model that trained on an image has learnt its mask, errors "
        "included; without --model, K-fold training scores every image with a model that never saw it",
        model,
    )
    return predictor


def _predict_all(predictor: Any, source: Any) -> Predicted:
    for index in range(len(source)):
        sample = source.load(index)
        yield index, None, sample, predictor.predict_proba(sample.image), predictor


def _fit_to_edges(source: Any) -> list[list[EdgeFit]]:
    """Every mask's objects fitted to its photo's edges (:func:`~segkit.labelling.edges.edge_fits`), by index."""
    from segkit.data.classes import background_index

    classes, background = list(source.classes), background_index(source.classes)
    fits = []
    for index in range(len(source)):
        sample = source.load(index)
        fits.append(edge_fits(sample.image, sample.mask, classes, background, source.ignore_index))
    return fits


def _score(
    predicted: Predicted, source: Any, top: int, edges: list[list[EdgeFit]], reliability: float
) -> tuple[list[AuditedImage], dict[str, _Shown]]:
    """Every image's score and regions, most suspect first, and the panels of the ``top`` most suspect (by name);
    ``edges``: each image's :func:`_fit_to_edges`, weighed by the data's ``reliability``."""
    from segkit.data.classes import background_index
    from segkit.prediction.arrays import probabilities_to_mask

    classes, background = list(source.classes), background_index(source.classes)
    most_suspect = _MostSuspect(top)
    images = []
    for index, fold, sample, probabilities, predictor in predicted:
        ref = source.samples[index]
        mask = probabilities_to_mask(probabilities, predictor.binary, predictor.threshold)
        regions, kinds = disputed_regions(sample.mask, probabilities, mask, classes, background, source.ignore_index)
        fits = outline_fits(sample.mask, mask, classes, background, source.ignore_index)
        quality = label_quality(sample.mask, probabilities, source.ignore_index)
        score = quality * outline_agreement(fits) * edge_agreement(edges[index], reliability)
        outline, edge = fits[0] if fits else None, edges[index][0] if edges[index] else None
        images.append(AuditedImage(ref.image or ref.label_file, ref.label_file, score, regions, fold, outline, edge))
        most_suspect.offer(str(ref.label_file), score, partial(_shown, sample.image, sample.mask, mask, kinds))
    images.sort(key=lambda item: (item.score, item.image.name))
    return images, most_suspect.by_name()


def _shown(image: np.ndarray, labels: np.ndarray, prediction: np.ndarray, kinds: np.ndarray) -> _Shown:
    """The page's panels of one image: the photo, label and prediction, and the photo with the regions outlined."""
    import cv2

    from segkit.visualize import fit_within

    photo = fit_within(image, DISPLAY_SIDE)
    kinds = fit_within(kinds, DISPLAY_SIDE, nearest=True)
    outlined = np.ascontiguousarray(photo).copy()
    for code, kind in enumerate(KINDS, start=1):
        contours, _ = cv2.findContours((kinds == code).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(outlined, contours, -1, KIND_COLOURS[kind], thickness=2)
    return _Shown(
        photo,
        fit_within(labels, DISPLAY_SIDE, nearest=True),
        fit_within(prediction, DISPLAY_SIDE, nearest=True),
        outlined,
    )


def _write_page(
    path: Path, result: AuditResult, shown: Mapping[str, _Shown], source: Any, data: Any, model: Any
) -> None:
    from segkit.data.classes import background_index, default_palette
    from segkit.labelling.audit_page import write_audit_page

    colours = source.color_table.class_colors(source.num_classes) if source.color_table is not None else None
    worst = [(item, shown[str(item.mask)]) for item in result.images[: result.top] if str(item.mask) in shown]
    write_audit_page(
        path,
        result,
        worst,
        classes=list(source.classes),
        palette=np.asarray(colours if colours is not None else default_palette(source.classes), np.uint8),
        background=background_index(source.classes),
        kind_colours=KIND_COLOURS,
        sources=[("data", str(data)), ("probabilities", result.probabilities)],
        note="" if model is None else IN_SAMPLE_NOTE,
    )


def _write_table(path: Path, result: AuditResult) -> None:
    write_csv(
        path,
        ["rank", "image", "score", *KINDS, "regions", "mask"],
        (
            [
                rank,
                item.image.name,
                round(item.score, 6),
                *(sum(region.kind == kind for region in item.regions) for kind in KINDS),
                item.summary(limit=len(item.regions)),
                str(item.mask),
            ]
            for rank, item in enumerate(result.images, start=1)
        ),
    )
