"""Out-of-sample probabilities by K-fold training: every image predicted by a model that never saw its mask."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("segkit.labelling.audit")

PREDICTION_SHARE = 0.1  # of the budget, set aside for predicting the held-out images until it is measured
# each fold's set-up outside its training budget (reading the data, the planner measuring this machine), as
# guessed before the first fold: this share of the budget, at most MAX_SETUP_GUESS seconds; then as measured
SETUP_SHARE = 0.05
MAX_SETUP_GUESS = 20.0
MIN_FOLD_SECONDS = 2.0

# what the probabilities of one image come with: sample index, fold (None: a given model), the sample, the
# (C, H, W) probabilities and the predictor that made them
Predicted = Iterator[tuple[int, "int | None", Any, np.ndarray, Any]]


def fixed_copy(data: str | Path, split: str | None, read: Mapping[str, Any], folder: Path) -> Any:
    """The data as segkit reads it (patterns, regions, colours ... applied), as ``images/`` + ``masks/``, opened."""
    from segkit.data.convert import convert_masks
    from segkit.data.sources import open_source

    return open_source(convert_masks(data, folder, split=split, **read).out)


def out_of_sample(
    source: Any,
    fixed: Any,
    folds: int,
    budget: float,
    runs: Path,
    train_options: Mapping[str, Any],
    prediction: Any,
) -> Predicted:
    """K-fold training: each fold's images predicted by a model trained on the others, within ``budget`` seconds.

    The folds deal the images by sorted name (every K-th to the same fold). Each fold's training
    gets an even share of what is left of the budget once the prediction of the images still to
    come and each fold's set-up are set aside (guessed for the first fold, then as measured).
    """
    from segkit.prediction.predictor import load_predictor
    from segkit.training.trainer import train

    deadline = time.monotonic() + budget
    copies = {ref.name: ref for ref in fixed.samples}
    fold_of = [position % folds for position in range(len(source))]
    seconds_per_image = PREDICTION_SHARE * budget / len(source)
    setup = min(MAX_SETUP_GUESS, SETUP_SHARE * budget)
    for fold in range(folds):
        held_out = [index for index, owner in enumerate(fold_of) if owner == fold]
        folder = runs.parent / f"fold_{fold + 1}"
        for index, owner in enumerate(fold_of):
            if owner != fold:
                copy = copies[source.samples[index].name]
                for path in (copy.image_file, copy.label_file):
                    link(path, folder / path.relative_to(fixed.root))
        shutil.copyfile(fixed.root / "class_names.txt", folder / "class_names.txt")
        still_to_predict = sum(owner >= fold for owner in fold_of)
        share = (deadline - time.monotonic() - seconds_per_image * still_to_predict) / (folds - fold) - setup
        seconds = max(MIN_FOLD_SECONDS, share)
        logger.info(
            "fold %d of %d: training on %d images for %.0f s, then predicting its %d",
            fold + 1, folds, len(source) - len(held_out), seconds, len(held_out),
        )  # fmt: skip
        options = {"device": prediction.device, **train_options}
        began = time.monotonic()
        trained = train(data=str(folder), out=str(runs / f"fold_{fold + 1}"), time_budget=seconds, **options)
        setup = max(0.0, time.monotonic() - began - seconds)
        predictor = load_predictor(trained.best_checkpoint, **prediction.predictor_kwargs())
        started = time.monotonic()
        for index in held_out:
            sample = source.load(index)
            yield index, fold + 1, sample, predictor.predict_proba(sample.image), predictor
        seconds_per_image = (time.monotonic() - started) / len(held_out)


def link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.symlink_to(source)
    except OSError:  # no symbolic links here (Windows without the privilege): a copy reads the same
        shutil.copyfile(source, target)
