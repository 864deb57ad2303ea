"""The planning race: candidate recipes train side by side on the user's data, the best keeps training.

The planner (:mod:`segkit.planning.planner`) proposes a few candidate recipes — input scale,
network, learning rate — ordered by its rules; rules alone cannot know which of them learns
best on *this* data on *this* machine in *this* budget, so they race. Each candidate is a
:class:`~segkit.training.learner.Learner` trained for slices of wall time on the real
training data (decoding, augmentation, loader and step: the real path) and scored at each
validation image's original size through the prediction code, by successive halving
(Jamieson & Talwalkar, 2016): after each rung the better half goes on with twice the time,
the others stop (and so does any candidate :data:`CLEAR_MARGIN` behind the best after the second rung
or later). The winner is never restarted: the trainer continues its Learner, so only the losers'
time is spent on the race: planned as :data:`RACE_SHARE` of the budget, never more than
:data:`RACE_CAP` (later rungs are shortened, or the race ends, when scoring or building took
longer than planned).

A budget shorter than :data:`MIN_RACE_BUDGET` (or one candidate) is not raced: the leading
candidate trains a short measured slice instead (:data:`PROBE_SECONDS`), which gives the
same measurements — images per second on the real path, what validating an image costs —
for the epoch estimate and for sizing validation to the budget.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from segkit.errors import SegkitError
from segkit.training.budget import (
    RunClock,
    ValidationCost,
    image_to_time_too,
    size_validation,
    subset_within,
    validation_pixels,
    validation_sizes,
)
from segkit.training.learner import Learner, LossNotFinite
from segkit.training.validation import spread, validate_model

logger = logging.getLogger("segkit.training")

RACE_SHARE = 0.2  # the losers' time (training, scoring, building) is planned as this share of the budget ...
RACE_CAP = 0.25  # ... and never more than this (a slow scoring or build is taken from later rungs)
MIN_RACE_BUDGET = 120.0  # seconds: a shorter budget is not raced
MIN_SLICE = {"cpu": 15.0, "gpu": 8.0}  # training seconds of a candidate's first slice, at least
MAX_CANDIDATES = 4
MIN_STEPS = 30  # optimiser steps every racer is expected to take in its first slice (else fewer race)
# a candidate this far behind the best score after the second rung or later stops, whatever its rank. Not after the
# first: its scores say which recipe learns the coarse layout fastest, not where it ends. Dubai with an ImageNet
# encoder: native crops 0.16-0.18 against whole images 0.29-0.30 after ~17 s each; stopped there, whole 512 x 448
# images won and ended at 0.51; with a second rung the crops drew level (0.30 against 0.31), won and ended at 0.56
CLEAR_MARGIN = 0.05
TIE_MARGIN, TIE_EPOCHS = 0.03, 1.5  # a final score this close: the candidate with 1.5x the epochs wins
RACE_VALIDATION_SHARE = 0.1  # scoring a candidate takes about this share of its first slice
BUILD_SECONDS = 2.0  # assumed per candidate (resizing its training images, building its model) when sizing slices
PROBE_SECONDS = 15.0  # without a race: training seconds measured before the epoch estimate (at most 5 % of the budget;
# the leader goes on from there, so a longer probe costs nothing and a passing hiccup weighs less)
PROBE_STEPS, PROBE_CAP = 4, 0.1  # ... and at least this many steps, unless they take more than this share of it


@dataclass
class RaceCandidate:
    """A recipe in the race: a short label, its training options, and what distinguishes it."""

    label: str
    config: Any  # TrainConfig
    choices: dict[str, Any] = field(default_factory=dict)
    steps_per_second: float | None = None  # the planner's first guess (None: unknown)


@dataclass
class RaceRecord:
    """What the race did, for ``plan.json``, the console and the report.

    Attributes:
        entries: one dict per candidate: ``label``, ``choices``, ``rungs`` (``steps``, ``images``,
            ``train_seconds``, ``seconds`` and ``score`` after each rung), ``eliminated`` (rung or
            ``None``), ``error``.
        winner: index of the winning entry.
        slice_seconds: training seconds of the first rung.
        loser_seconds: wall time spent on the candidates that lost.
        seconds: wall time of the whole race.
        validation_images: the validation images the race scored on (names).
        skipped: why there was no race (empty when there was one).
    """

    entries: list[dict[str, Any]] = field(default_factory=list)
    winner: int = 0
    slice_seconds: float = 0.0
    loser_seconds: float = 0.0
    seconds: float = 0.0
    budget: float = 0.0
    validation_images: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def raced(self) -> bool:
        return not self.skipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "raced": self.raced,
            "skipped": self.skipped,
            "winner": self.winner,
            "slice_seconds": round(self.slice_seconds, 2),
            "loser_seconds": round(self.loser_seconds, 2),
            "loser_share": round(self.loser_seconds / self.budget, 4) if self.budget else 0.0,
            "seconds": round(self.seconds, 2),
            "validation_images": list(self.validation_images),
            "entries": self.entries,
        }


@dataclass
class Measured:
    """What the race (or the probe) measured of the recipe that goes on training.

    Attributes:
        images_per_second: training images (or crops) per second on the real path, loader included.
        validation: what validating an image costs, measured (``None``: not measured).
    """

    images_per_second: float
    validation: ValidationCost | None


def halving_units(count: int) -> tuple[int, int]:
    """Training time in first-rung slices when ``count`` candidates race by successive halving: the losers' in
    all, and the winner's (each rung trains the survivors to twice the time of the one before)."""
    units, alive, rung = 0, count, 0
    while alive > 1:
        survivors = math.ceil(alive / 2)
        units += (alive - survivors) * 2**rung
        alive, rung = survivors, rung + 1
    return units, 2 ** (rung - 1) if rung else 0


def first_slice(count: int, budget: float) -> float:
    """Training seconds of each candidate's first rung when ``count`` candidates race in ``budget`` seconds."""
    allowance = RACE_SHARE * budget - (count - 1) * BUILD_SECONDS
    return allowance / (halving_units(count)[0] * (1 + RACE_VALIDATION_SHARE))


def planned_race_seconds(count: int, slice_seconds: float) -> tuple[float, float]:
    """What a race of ``count`` candidates with first slices of ``slice_seconds`` is expected to cost: the losers'
    seconds (training, scoring, building) and the winner's (training and scoring its rungs)."""
    if count < 2:
        return 0.0, 0.0
    losers, winner = halving_units(count)
    per_unit = slice_seconds * (1 + RACE_VALIDATION_SHARE)
    return losers * per_unit + (count - 1) * BUILD_SECONDS, winner * per_unit


def race_size(candidates: int, budget: float, kind: str) -> tuple[int, float, str]:
    """How many candidates race in ``budget`` seconds, the first slice, and why not when it is one.

    As many as :data:`MAX_CANDIDATES` whose losers fit :data:`RACE_SHARE` of the budget with a
    first slice of at least :data:`MIN_SLICE` seconds of training each.
    """
    if candidates < 2:
        return 1, 0.0, "one candidate (the options you set leave nothing to race)"
    if budget < MIN_RACE_BUDGET:
        return 1, 0.0, f"a budget under {MIN_RACE_BUDGET:.0f}s is too short to race"
    for count in range(min(MAX_CANDIDATES, candidates), 1, -1):
        first = first_slice(count, budget)
        if first >= MIN_SLICE[kind]:
            return count, first, ""
    return 1, 0.0, f"the budget allows less than {MIN_SLICE[kind]:.0f}s of training per candidate"


def choose_racers(
    candidates: Sequence[RaceCandidate], budget: float, kind: str, skip: str = ""
) -> tuple[list[RaceCandidate], float, str]:
    """The candidates that race, their first slice, and why there is no race (``""``: there is one; ``skip``: the
    caller's reason not to race, ``--no-race`` or the plan's own).

    Every racer, the leader included, is expected to take :data:`MIN_STEPS` optimiser steps in
    its first slice (scores after a handful of steps say little): when the leader is slower
    than that, fewer candidates race with longer slices, and when not even two can, the
    rule-based leader trains without a race. Too slow challengers are passed over.
    """
    if skip:
        return list(candidates[:1]), 0.0, skip
    count, _, why = race_size(len(candidates), budget, kind)
    while count > 1:
        first = first_slice(count, budget)
        fast = [k for k, c in enumerate(candidates) if (c.steps_per_second or math.inf) * first >= MIN_STEPS]
        if fast[:1] == [0] and len(fast) >= count:
            return [candidates[k] for k in fast[:count]], first, ""
        count -= 1
    return list(candidates[:1]), 0.0, why or f"a first slice would give the leader under {MIN_STEPS} steps"


class Race:
    """Successive halving of candidate recipes by their score at original size on validation images.

    Args:
        candidates: the recipes, the planner's favourite first (ties go to the earlier one).
        build: makes the Learner of a candidate's options.
        progress: the run's schedule position for a Learner that has had ``seconds`` of the run
            (the learning rate of every candidate follows the schedule it would have as the winner).
        stop: a stop reason (a signal) or ``None``; a stopped race ends with the best so far.
        val_source, val_indices: the validation samples (``load(i)``; sizes from ``.image``).
        device: where the candidates train and are scored.
        budget: the run's time budget in seconds.
        first: the first candidate's Learner when it is already built.
        skip: why not to race (``--no-race`` ...): the first candidate is measured instead.
    """

    def __init__(
        self,
        candidates: Sequence[RaceCandidate],
        build: Callable[[Any], Learner],
        progress: Callable[[float], float],
        stop: Callable[[], str | None],
        val_source: Any,
        val_indices: list[int],
        device: torch.device,
        budget: float,
        first: Learner | None = None,
        skip: str = "",
    ) -> None:
        self.kind = "gpu" if device.type == "cuda" else "cpu"
        self.candidates, self.slice, skipped = choose_racers(candidates, budget, self.kind, skip)
        if skipped and not skip and len(candidates) > 1:  # the caller's reason was said where it was decided
            logger.info("race none: %s", skipped)
        self.count = len(self.candidates)
        self.build = build
        self.progress = progress
        self.stop = stop
        self.val_source = val_source
        self.val_indices = val_indices
        self.device = device
        self.budget = budget
        self.first = first
        self.record = RaceRecord(slice_seconds=self.slice, budget=budget, skipped=skipped)
        self.subset: list[int] = []
        sizes = validation_sizes(val_source, val_indices)
        # per candidate and validation image: the pixels its network computes and the image's own
        self.pixels = [validation_pixels(sizes, candidate.config.preprocess) for candidate in self.candidates]
        self.validation_cost: dict[int, ValidationCost] = {}
        self.per_image_pixel = 0.0  # seconds per image pixel, measured once (the same data for every candidate)
        self.train_seconds: dict[int, float] = {}
        self.first_step: dict[int, tuple[float, int]] = {}  # seconds and images of each candidate's first step

    @property
    def planned_loser_seconds(self) -> float:
        """What the losers are expected to cost (training, scoring and building)."""
        return planned_race_seconds(self.count, self.slice)[0] if self.record.raced else 0.0

    # ------------------------------------------------------------------ public
    def run(self) -> tuple[int, Learner, Measured]:
        """Race (or probe the only candidate); returns the winner's index, its Learner and measurements."""
        start = time.monotonic()
        if not self.record.raced:
            learner = self._learner(0)
            self._train(0, learner, min(PROBE_SECONDS, 0.05 * self.budget), PROBE_STEPS, PROBE_CAP * self.budget)
            self._measure_validation(0, learner)
            self._record_rung(0, learner, None)
            self.record.seconds = time.monotonic() - start
            return 0, learner, self._measured(0, learner)
        logger.info(
            "race: %d candidates, %.0fs of training each first; the better half goes on with twice the time",
            self.count,
            self.slice,
        )
        learners: dict[int, Learner] = {}
        alive, rung = list(range(self.count)), 0
        while len(alive) > 1:
            until = self._affordable(alive, self.slice * 2**rung) if rung else self.slice
            scores: dict[int, float] = {}
            for index in alive:
                if self.stop() is not None or until is None:
                    break
                scores[index] = self._run_rung(index, rung, until, learners)
            if until is None:  # no rung fits the cap any more: the best of the last one wins
                scores = {i: self._entry(i)["rungs"][-1]["score"] for i in alive if self._entry(i)["rungs"]}
            stopped = self.stop() is not None or until is None
            ranked = [i for i in sorted(scores, key=lambda i: (-scores[i], i)) if i in learners]
            if not ranked:
                raise SegkitError(None, "every candidate recipe failed in the race (see the lines above)")
            best = scores[ranked[0]]
            survivors = ranked[:1] if stopped else ranked[: math.ceil(len(alive) / 2)]
            if rung:  # clearly behind after a second rung: out now (see CLEAR_MARGIN)
                survivors = [i for i in survivors if scores[i] >= best - CLEAR_MARGIN]
            if len(survivors) == 1:
                survivors = [self._decide(ranked, scores, learners)]
            for index in alive:
                if index not in survivors:
                    self._entry(index)["eliminated"] = rung
                    learners.pop(index, None)
            alive, rung = survivors, rung + 1
        winner = alive[0]
        self.record.winner = winner
        self.record.seconds = time.monotonic() - start
        self.record.loser_seconds = sum(entry["seconds"] for i, entry in enumerate(self.record.entries) if i != winner)
        losers = [entry for i, entry in enumerate(self.record.entries) if i != winner]
        logger.info(
            "race won by %s (score %s; %s); the losers took %.0fs (%.0f%% of the budget)",
            self.candidates[winner].label,
            _score_text(self._entry(winner)),
            ", ".join(f"{entry['label']} {_score_text(entry)}" for entry in losers),
            self.record.loser_seconds,
            100 * self.record.loser_seconds / max(self.budget, 1e-9),
        )
        return winner, learners[winner], self._measured(winner, learners[winner])

    # ----------------------------------------------------------------- helpers
    def _decide(self, ranked: list[int], scores: dict[int, float], learners: dict[int, Learner]) -> int:
        """The winner: the best score, unless a candidate within :data:`TIE_MARGIN` of it trains
        :data:`TIE_EPOCHS` times as many epochs in the same time.

        Early scores favour whatever learns fastest at first; when they are this close, the
        recipe that will see the data more often in the rest of the budget ends ahead (measured
        on the race's own images per second).
        """

        def epochs_per_second(index: int) -> float:
            return learners[index].epochs_seen / max(self.train_seconds.get(index, 0.0), 1e-9)

        best = ranked[0]
        for other in ranked[1:]:
            close = scores[best] - scores[other] <= TIE_MARGIN
            if close and epochs_per_second(other) >= TIE_EPOCHS * epochs_per_second(best):
                logger.info(
                    "race: %s is within %.2f of %s and trains %.1fx the epochs: it goes on",
                    self.candidates[other].label,
                    TIE_MARGIN,
                    self.candidates[best].label,
                    epochs_per_second(other) / epochs_per_second(best),
                )
                best = other
        return best

    def _affordable(self, alive: list[int], until: float) -> float | None:
        """The training seconds the candidates still racing may reach without the losers passing :data:`RACE_CAP`.

        Whichever wins, every other candidate's time is lost: the projection counts all of it
        but the largest. ``None`` when not even half a first slice more fits.
        """
        spent = {index: self._entry(index)["seconds"] for index in range(len(self.record.entries))}
        lost = sum(spent.values()) - max(spent[index] for index in alive)
        trained = min(self.train_seconds.get(index, 0.0) for index in alive)
        per_second = (len(alive) - 1) * (1 + RACE_VALIDATION_SHARE)
        if lost + per_second * (until - trained) <= RACE_CAP * self.budget:
            return until
        reachable = trained + (RACE_CAP * self.budget - lost) / per_second
        return reachable if reachable - trained >= self.slice / 2 else None

    def _run_rung(self, index: int, rung: int, until: float, learners: dict[int, Learner]) -> float:
        """Train candidate ``index`` to ``until`` seconds of training and score it (``-inf`` when it failed)."""
        learner = learners.get(index)
        try:
            if learner is None:
                learner = learners[index] = self._learner(index)
            self._train(index, learner, until)
            score = self.score(index, learner)
            self._record_rung(index, learner, score)
        except (LossNotFinite, torch.OutOfMemoryError) as error:
            entry = self._entry(index)
            entry["error"] = "the loss became not finite" if isinstance(error, LossNotFinite) else "out of memory"
            if learner is not None:
                entry["seconds"] = round(learner.seconds, 2)
            learners.pop(index, None)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            score = -math.inf
        self._log(index, rung)
        return score

    def _entry(self, index: int) -> dict[str, Any]:
        while len(self.record.entries) <= index:
            candidate = self.candidates[len(self.record.entries)]
            self.record.entries.append(
                {
                    "label": candidate.label,
                    "choices": candidate.choices,
                    "rungs": [],
                    "eliminated": None,
                    "error": None,
                    "seconds": 0.0,
                }
            )
        return self.record.entries[index]

    def _learner(self, index: int) -> Learner:
        start = time.monotonic()
        learner = self.first if index == 0 and self.first is not None else self.build(self.candidates[index].config)
        learner.seconds += time.monotonic() - start
        self._entry(index)
        return learner

    def _train(self, index: int, learner: Learner, until: float, steps: int = 0, longest: float = 0.0) -> None:
        """Train ``learner`` until it has had ``until`` seconds of training (or a stop signal), and at least
        ``steps`` steps unless that passes ``longest`` seconds. The first step is timed apart (warm-up)."""
        spent = self.train_seconds.get(index, 0.0)
        taken = 0
        while (spent < until or (taken < steps and spent < longest)) and self.stop() is None:
            step_start = time.monotonic()
            images, masks = learner.next_batch()
            learner.train_step(images, masks, learner.lr_at(self.progress(learner.seconds)))
            took = time.monotonic() - step_start
            spent += took
            learner.seconds += took
            taken += 1
            self.first_step.setdefault(index, (took, len(images)))
        self.train_seconds[index] = spent

    def _measure_validation(self, index: int, learner: Learner) -> list[int]:
        """Time the validation of one image (and of a second, :func:`~segkit.training.budget.image_to_time_too`);
        choose the race's validation images from them (first time only)."""
        if self.subset:
            return self.subset
        start = time.monotonic()
        pixels = self.pixels[index]
        first = spread(self.val_indices, 1)[0]
        second = image_to_time_too(pixels, first)
        cost = ValidationCost.fit(
            (pixels[first], self._validation_seconds(learner, [first])),
            None if second is None else (pixels[second], self._validation_seconds(learner, [second])),
        )
        self.validation_cost[index], self.per_image_pixel = cost, cost.per_image_pixel
        cap = RACE_VALIDATION_SHARE * (self.slice or PROBE_SECONDS)
        slowest = {
            image: max(cost.seconds(self.pixels[k][image]) for k in range(self.count)) for image in self.val_indices
        }
        self.subset = subset_within(self.val_indices, slowest, cap)
        self.record.validation_images = [self.val_source.name(i) for i in self.subset]
        learner.seconds += time.monotonic() - start
        return self.subset

    def score(self, index: int, learner: Learner) -> float:
        """mIoU of the EMA weights on the race's validation images (-1 when undefined)."""
        subset = self._measure_validation(index, learner)
        start = time.monotonic()
        result = validate_model(learner.weights("ema"), learner.card, self.val_source, subset, device=self.device)
        pixels = [self.pixels[index][image] for image in subset]
        total = (sum(network for network, _ in pixels), sum(image for _, image in pixels))
        self.validation_cost[index] = ValidationCost.measured(total, result.seconds, self.per_image_pixel)
        learner.seconds += time.monotonic() - start
        return -1.0 if math.isnan(result.miou) else result.miou

    def _validation_seconds(self, learner: Learner, images: list[int]) -> float:
        weights = learner.weights("ema")
        return validate_model(weights, learner.card, self.val_source, images, device=self.device).seconds

    def _record_rung(self, index: int, learner: Learner, score: float | None) -> None:
        entry = self._entry(index)
        entry["seconds"] = round(learner.seconds, 2)
        entry["rungs"].append(
            {
                "steps": learner.steps_done,
                "images": learner.images_seen,
                "train_seconds": round(self.train_seconds.get(index, 0.0), 2),
                "seconds": round(learner.seconds, 2),
                "score": None if score is None else round(score, 4),
            }
        )

    def _log(self, index: int, rung: int) -> None:
        entry = self._entry(index)
        if entry["error"]:
            logger.info("race rung %d  %-48s  %s", rung + 1, entry["label"], entry["error"])
            return
        last = entry["rungs"][-1]
        logger.info(
            "race rung %d  %-48s  %5d steps  %6.1fs  score %.4f",
            rung + 1,
            entry["label"],
            last["steps"],
            last["seconds"],
            last["score"],
        )

    def _measured(self, index: int, learner: Learner) -> Measured:
        """Images per second after the first step (kernels chosen, memory allocated, first images decoded)."""
        seconds, images = self.train_seconds.get(index, 0.0), learner.images_seen
        if learner.steps_done > 1 and index in self.first_step:
            seconds, images = seconds - self.first_step[index][0], images - self.first_step[index][1]
        rate = images / seconds if seconds > 0 else 0.0
        return Measured(rate, self.validation_cost.get(index))


def _score_text(entry: dict[str, Any]) -> str:
    if entry.get("error"):
        return entry["error"]
    return f"{entry['rungs'][-1]['score']:.3f}" if entry["rungs"] else "-"


def plan_candidates(plan: Any, config: Any) -> tuple[list[RaceCandidate], str]:
    """The recipes to race for ``config`` from the planner's ``plan``, and why not to race (``""``: race)."""
    as_configured = [RaceCandidate("as configured", config)]
    if plan is None:
        return as_configured, "--no-plan"
    if not config.race:
        return as_configured, "--no-race"
    candidates = [RaceCandidate(c.label, plan.apply(config, c), c.choices, c.steps_per_second) for c in plan.candidates]
    return candidates or as_configured, plan.no_race


def race_plan(
    plan: Any,
    config: Any,
    first: Learner,
    *,
    data: Any,
    device: torch.device,
    clock: RunClock,
    build: Callable[[Any], Learner],
    stop: Callable[[], str | None],
) -> tuple[Learner, Measured, list[int] | None]:
    """The race stage of a run: the plan's candidates race (or the one recipe is measured) on ``clock``'s budget.

    The clock learns what the losers cost, how many final validations the winner needs and
    what one validation takes; the plan adopts the winner's choices, records the race and decides
    its class weights again on the epochs now measured (the winner's loss is rebuilt if they change).

    Returns:
        The winner's Learner, what was measured of it, and the validation images to score
        (evenly spread, sized to the budget; ``None`` when validation was not timed).
    """
    budget = float(config.time_budget or 0.0)
    candidates, skip = plan_candidates(plan, config)
    before = clock.elapsed  # opening, decoding and planning: part of every candidate's schedule
    race = Race(
        candidates,
        build=build,
        progress=lambda seconds: clock.progress_at(before + seconds),
        stop=stop,
        val_source=data.val_source,
        val_indices=data.val_indices,
        device=device,
        budget=budget,
        first=first,
        skip=skip,
    )
    clock.loser_seconds = race.planned_loser_seconds  # until the race is over: what it plans to spend
    winner, learner, measured = race.run()
    clock.final_validations = 2 if learner.ema is not None else 1
    clock.loser_seconds = race.record.loser_seconds
    scored = None
    if measured.validation is not None:
        scored, clock.last_validation_seconds = size_validation(
            data.val_indices, race.pixels[winner], measured.validation, budget
        )
    if plan is not None:
        plan.adopt(race.candidates[winner].choices if race.record.raced else {}, race.record.to_dict())
        # the class weights were planned on a first guess of the epochs: decided again on the measured ones,
        # the winner's epochs in the race included (they are part of the model's training as much as the rest)
        epochs = clock.expected_epochs(learner.epoch_images, measured.images_per_second, learner.config.val_every)
        revised = plan.revise_class_weights(epochs + learner.epochs_seen)
        if revised is not None:
            learner.use_class_weights(revised.value)
            logger.info("class weights %s: %s", revised.value or "none", revised.reason)
    return learner, measured, scored


def plan_training(config: Any) -> Any:
    """The plan ``segkit train`` would follow for ``config`` (``segkit plan``, ``--plan-only``).

    With a time budget the leading recipe trains a short measured slice (as training does
    when it does not race), so that the expected epochs come from the real training path;
    when the candidates would race, the expected epochs are those after the race (as the
    run's epoch lines count them), the race's planned time spent. Nothing is written.
    """
    from segkit.device import resolve_device
    from segkit.planning.planner import make_plan
    from segkit.training.builders import open_training_data

    start = time.monotonic()
    data = open_training_data(config)
    device = resolve_device(config.device)
    plan = make_plan(config, data, device, time.monotonic() - start)
    if not config.time_budget:
        return plan
    leader = plan.apply(config)
    budget = float(config.time_budget)
    probe = Race(
        [RaceCandidate("the plan", leader)],
        build=lambda options: Learner(options, data, device),
        progress=lambda seconds: seconds / budget,
        stop=lambda: None,
        val_source=data.val_source,
        val_indices=data.val_indices,
        device=device,
        budget=budget,
    )
    _, learner, measured = probe.run()
    clock = RunClock(budget, final_validations=2 if leader.ema else 1, started=start)
    if measured.validation is not None:
        _, clock.last_validation_seconds = size_validation(
            data.val_indices, probe.pixels[0], measured.validation, budget
        )
    candidates, skip = plan_candidates(plan, config)
    racers, slice_seconds, _ = choose_racers(candidates, budget, probe.kind, skip)
    losers, winner = planned_race_seconds(len(racers), slice_seconds)
    plan.planned_race = (len(racers), losers + winner)
    rate = measured.images_per_second
    # the epochs after the race, as the run counts them; the probe's seconds were the winner's first slice
    before = max(losers + winner - probe.record.seconds, 0.0)
    epochs = clock.expected_epochs(learner.epoch_images, rate, leader.val_every, before=before)
    plan.expect(epochs, {racer.label for racer in racers} if len(racers) > 1 else set())
    race_epochs = halving_units(len(racers))[1] * slice_seconds * rate / max(learner.epoch_images, 1)
    plan.revise_class_weights(epochs + max(race_epochs, learner.epochs_seen))
    return plan
