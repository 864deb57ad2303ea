"""``segkit report RUN``: a training run's best model scored on the run's own validation images.

Gathering only: which images validated the run (through :func:`segkit.data.sources.validation_images`,
the one owner of that choice), their scores at original size (:func:`segkit.evaluation.evaluate.evaluate_checkpoint`);
:mod:`segkit.evaluation.html_report` renders the page.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from segkit.checkpoint import ModelCard, load_checkpoint
from segkit.config import TrainConfig
from segkit.data.sources import open_source, validation_images
from segkit.errors import SegkitError
from segkit.evaluation.evaluate import evaluate_checkpoint
from segkit.evaluation.html_report import write_report
from segkit.evaluation.options import ReportOptions
from segkit.evaluation.per_image import PerImageScores

logger = logging.getLogger(__name__)


def report_run(run_dir: str | Path, out: str | Path | None = None, **options: Any) -> Path:
    """Write the report of a training run folder: its ``best.pt`` (else ``last.pt``) evaluated on the run's validation images.

    The validation images are found as the run found them (``--val``, a ``val`` split, or
    the ``--val-split`` share held out by name), with the run's ``--masks``, ``--colors``
    and ``--classes``; ``data`` (and ``val_split``) evaluate on other data instead, read as
    ``segkit evaluate`` reads it. When
    the run's data folder is gone, the report shows the validation metrics stored in the
    checkpoint and says so.

    Args:
        run_dir: the run folder (``segkit train --out``).
        out: the HTML file (default ``RUN_DIR/report.html``).
        **options: the command's options, as :class:`~segkit.evaluation.options.ReportOptions`
            declares them: ``data`` (evaluate on this dataset folder instead), ``val_split``
            (with ``data``: only the images ``segkit train --val-split`` would hold out),
            ``worst=8`` (how many of the worst images to show), ``batch_size=8`` (images per
            forward pass), ``device="auto"`` (where the model runs).

    Returns:
        The written file.

    Raises:
        OptionError: ``val_split`` without ``data``, ``worst`` below 0 or ``batch_size`` below 1.
        SegkitError: no ``best.pt`` or ``last.pt`` in ``run_dir``, or unreadable data.

    Example:
        >>> import segkit
        >>> segkit.report("runs/exp")  # runs/exp/report.html
    """
    settings = ReportOptions(**options)
    run_dir = Path(run_dir)
    best = run_dir / "best.pt"
    if not best.is_file():
        if not (run_dir / "last.pt").is_file():
            raise SegkitError(run_dir, "no best.pt or last.pt here: not a segkit training run folder")
        best = run_dir / "last.pt"  # a run stopped before its first validation: its latest weights
        logger.warning("%s: no best.pt yet; reporting on last.pt", run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    checkpoint = load_checkpoint(best)
    card = checkpoint.card
    sources = [("run", str(run_dir)), ("model", str(best))]
    source, held_out, where = _validation_source(card, settings.data, settings.val_split)
    if source is None:
        metrics = card.training.metrics
        if not metrics:
            raise SegkitError(
                best, f"no stored validation metrics, and the training data {where} was not found; pass --data DATA"
            )
        note = (
            f"The training data ({where}) was not found, so these are the validation metrics of the best epoch as "
            "stored in the checkpoint (a subset of the validation images when the run sampled them to fit its budget). "
            "Pass --data DATA to evaluate at each image's original size with per-image scores."
        )
        write_report(
            out,
            metrics,
            card=card,
            ignore_index=card.ignore_index,
            sources=sources,
            note=note,
            title="segkit training report",
        )
        return out
    scores = PerImageScores(settings.worst)
    metrics = evaluate_checkpoint(
        checkpoint, source, batch_size=settings.batch_size, device=settings.device, val_split=held_out, on_image=scores
    )
    sources.append(("data", where))
    write_report(
        out,
        metrics,
        scores=scores,
        card=card,
        ignore_index=card.ignore_index,
        sources=sources,
        title="segkit training report",
    )
    return out


def _validation_source(
    card: ModelCard, data: str | Path | None, val_split: float | None
) -> tuple[Any, float | None, str]:
    """``(source to evaluate: an opened source, a folder, or None when the run's data is gone;
    held-out fraction; description)``."""
    if data is not None:  # read as `segkit evaluate MODEL DATA` reads it
        return Path(data), val_split, str(data) + (f" (held out {val_split:g})" if val_split else "")
    config = card.training.config
    default_split = next(field.default for field in dataclasses.fields(TrainConfig) if field.name == "val_split")
    where = validation_images(
        config.get("data") or "",
        config.get("val"),
        config.get("masks"),
        config.get("val_split", default_split),
        config.get("images"),
    )
    folder = Path(where.folder)
    if not str(where.folder) or not folder.exists():
        return None, None, where.describe()
    source = open_source(
        folder,
        split=where.split,
        masks=config.get("masks"),
        colors=config.get("colors"),
        classes=config.get("classes"),
        ignore_index=card.ignore_index,
        images=config.get("images"),
        roi_masks=config.get("roi_masks"),
        fit_masks=bool(config.get("fit_masks")),
        label_map=config.get("label_map"),
    )
    return source, where.held_out, where.describe()
