"""The training loop: plan, data, model, EMA, validation at original size, checkpoints, callbacks.

:class:`Trainer` runs one training described by a :class:`~segkit.config.TrainConfig`
(single process or under ``torchrun``) in stages: open the data and plan
(:mod:`segkit.training.builders`, :mod:`segkit.planning`), race the candidate recipes
(:mod:`segkit.training.race`), then epochs of :meth:`Learner.train_step
<segkit.training.learner.Learner.train_step>` with validations at original size. The time
arithmetic is :class:`~segkit.training.budget.RunClock`'s, what the run has done is a
:class:`~segkit.training.record.RunRecord`. Its public seams are :meth:`Trainer.train_epoch`,
:meth:`Trainer.validate`, :meth:`Trainer.checkpoint`, :meth:`Trainer.fit` and the
:class:`~segkit.training.callbacks.Callback` hooks, which loggers, benchmarks and tests use.

A run never loses work: ``last.pt`` holds everything ``--resume`` needs (down to the
step inside an epoch after a stop signal), checkpoints are written atomically, a second
run into the same folder is refused, and a failed write stops the run with one line while
the previous checkpoints stay intact.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from segkit.checkpoint import Checkpoint, ModelCard, load_checkpoint, save_checkpoint
from segkit.config import TrainConfig
from segkit.errors import SegkitError
from segkit.files import atomic_write, to_json_safe
from segkit.training.budget import RunClock
from segkit.training.builders import TrainingData, check_resumable, data_fingerprint, open_training_data
from segkit.training.callbacks import Callback, TrainResult
from segkit.training.distributed import (
    all_reduce_sum,
    broadcast_object,
    cleanup_distributed,
    training_device,
)
from segkit.training.learner import Learner, LossNotFinite, restore_rng_state, rng_state
from segkit.training.race import Measured, race_plan
from segkit.training.record import RunRecord
from segkit.training.run_folder import RunLock, StopSignals, choose_run_folder
from segkit.training.validation import (
    SampleChoice,
    ValidationResult,
    never_predicted,
    validate_model,
    validation_row,
)

if TYPE_CHECKING:
    from segkit.planning.planner import Plan

logger = logging.getLogger(__name__)

# last.pt is written at least this often (seconds), and at every validation.
LAST_CHECKPOINT_INTERVAL = 30.0


class RunInterrupted(SegkitError):
    """A stop signal ended the run after ``last.pt`` was written; the process exits with ``128 + signal``."""

    def __init__(self, out: Path, signal_name: str) -> None:
        import signal

        super().__init__(
            out,
            f"stopped by {signal_name} after writing last.pt; continue with segkit train --resume {out / 'last.pt'}",
        )
        self.exit_code = 128 + int(signal.Signals[signal_name])


@dataclass
class EpochResult:
    """One :meth:`Trainer.train_epoch`: mean loss, images seen, seconds, and why it ended early (if it did)."""

    loss: float
    images: int
    seconds: float
    stopped: str | None = None

    def row(self, epoch: int, lr: float) -> dict[str, Any]:
        """The epoch's ``history`` row (validation columns are added to it)."""
        rate = self.images / max(self.seconds, 1e-9)
        return {"epoch": epoch, "train_loss": self.loss, "lr": lr, "seconds": self.seconds, "images_per_second": rate}


class Trainer:
    """Runs one training described by a :class:`TrainConfig` (single process or ``torchrun``).

    Args:
        config: the options; those the user did not set (``config.user_options``) are derived by
            the planner first, unless ``config.plan`` is off.
        callbacks: hooks called on the main process (loggers, benchmarks, tests).
        progress: show progress bars (``None``: when the output is a terminal).

    Public attributes: ``config`` (resolved; after the race, the winner's), ``plan`` (or ``None``),
    ``out``, ``device``, ``data`` (:class:`~segkit.training.builders.TrainingData`), ``learner``
    (the recipe being trained: model, EMA, optimiser, loader ...), ``clock`` and ``record``.
    """

    def __init__(
        self, config: TrainConfig, callbacks: list[Callback] | tuple[Callback, ...] = (), progress: bool | None = None
    ) -> None:
        self.clock = RunClock(config.time_budget)
        self.progress = progress
        self.callbacks = list(callbacks)
        self.device, self.dist = training_device(config.device)
        resumed = load_checkpoint(config.resume) if config.resume else None
        self.out = choose_run_folder(config.out, config.resume, config.overwrite, self.dist.is_main)
        self.lock = RunLock(self.out)
        if self.dist.is_main:
            self.lock.acquire()  # refused before any file is written
        try:
            self._set_up(config, resumed)
        except BaseException:
            self.lock.release()
            raise

    def _set_up(self, config: TrainConfig, resumed: Checkpoint | None) -> None:
        """Open the data, plan the options not set, build the learner; restore a resumed run."""
        self.data: TrainingData = open_training_data(config)
        self.data_fingerprint = data_fingerprint(self.data)
        if resumed is not None:
            check_resumable(config, self.data, self.data_fingerprint, resumed)
        self.plan: Plan | None = None
        if config.plan and config.user_options is not None and resumed is None:
            from segkit.planning.planner import make_plan

            plan = make_plan(config, self.data, self.device, self.elapsed) if self.dist.is_main else None
            self.plan = broadcast_object(plan)
            config = self.plan.apply(config)
        self.config = config
        self.data.val_source.preload(
            self.data.val_indices[self.dist.rank :: self.dist.world_size], progress=self._show_progress()
        )
        self.learner = self._build_learner(config, self._show_progress())
        logger.info("data: %s", self.data.describe(len(self.learner.train_set), self.learner.binary))
        self.record = RunRecord(config.val_every, list(self.data.val_indices))
        self.stop_signals = StopSignals()
        self.samples = SampleChoice(self.data.val_source, config.num_samples, self.card.ignore_index)
        self.measured = resumed is not None or not config.time_budget or self.dist.enabled
        if resumed is not None:
            self._restore(resumed)

    def _build_learner(self, config: TrainConfig, progress: bool | None = False) -> Learner:
        learner = Learner(config, self.data, self.device, self.dist, progress=progress)
        self.clock.final_validations = 2 if learner.ema is not None else 1  # the last scores raw and EMA weights
        return learner

    def _restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.resume
        if state is None:
            raise SegkitError(self.config.resume, "has no optimiser state (resume from last.pt, not best.pt)")
        self.learner.load_state_dict(checkpoint.state_dict, state)
        progress = state["progress"]
        self.record = RunRecord.restore(checkpoint.card.training, progress, self.record.val_indices)
        self.learner.steps_done = int(progress["steps_done"])
        self.clock.restore(progress)
        self._resume_rng = state["rng"]
        restore_rng_state(state["rng"])
        logger.info("resumed from %s at %s", self.config.resume, self.record.position())

    # ------------------------------------------------------------ what callbacks read
    @property
    def classes(self) -> list[str]:
        return self.learner.classes

    @property
    def card(self) -> ModelCard:
        return self.learner.card

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.record.history

    @property
    def best_epoch(self) -> int:
        return self.record.best_epoch

    @property
    def best_weights(self) -> str:
        return self.record.best_weights

    @property
    def elapsed(self) -> float:
        """Seconds of this run so far (earlier sessions of a resumed run included)."""
        return self.clock.elapsed

    @property
    def max_epochs_estimate(self) -> int:
        """Epochs expected in this run: ``--epochs``, or what the budget allows at the pace so far."""
        if not self.config.time_budget:
            return self.config.max_epochs
        planned = self.plan.epochs if self.plan is not None and self.plan.epochs else 0
        return self.clock.epochs_estimate(self.history, planned)

    # ------------------------------------------------------------------ the race
    def _race(self) -> Measured:
        """Race the plan's candidates (or measure the one recipe); go on with the winner, sized to the budget."""
        self.learner, measured, scored = race_plan(
            self.plan,
            self.config,
            self.learner,
            data=self.data,
            device=self.device,
            clock=self.clock,
            build=self._build_learner,
            stop=lambda: self.stop_signals.received,
        )
        if scored is not None:
            self.record.val_indices = scored
        self.config, self.measured = self.learner.config, True
        return measured

    def _announce(self, measured: Measured) -> None:
        """Write the winner's ``last.pt`` (timed: checkpoints count as validation's cost), then the epoch estimate."""
        start = time.monotonic()
        if self.dist.is_main:
            self._save("last.pt", self.checkpoint(0, full=True))
        self.clock.save_seconds = time.monotonic() - start
        epochs = self.clock.expected_epochs(
            self.learner.epoch_images, measured.images_per_second, self.record.val_every
        )
        if self.plan is not None:
            self.plan.epochs = epochs
        validation = self.clock.last_validation_seconds
        timed = f", validation {validation:.1f}s on {len(self.record.val_indices)} images" if validation else ""
        rate = measured.images_per_second
        logger.info(
            "expected: ~%d epochs in the budget (measured on this data: %.1f training images/s%s)", epochs, rate, timed
        )

    # ---------------------------------------------------------------- training
    def _show_progress(self) -> bool | None:
        return self.progress if self.dist.is_main else False

    def _progress(self) -> float:
        """Fraction of training done: elapsed time of the budget, or steps of all epochs."""
        if self.config.time_budget:
            return self.clock.progress()
        return self.learner.steps_done / (self.config.max_epochs * max(len(self.learner.train_loader), 1))

    def train_epoch(self, epoch: int) -> EpochResult:
        """One pass over the training data (or the rest of it, after a mid-epoch resume).

        Stops early at a step boundary when the time budget is used or a stop signal came.
        Every epoch's shuffling and augmentation depend only on ``(seed, epoch)``, so a
        resumed run repeats exactly what the uninterrupted run would have done.
        """
        start, record = time.monotonic(), self.record
        batches = self.learner.start_epoch(epoch)
        skip, record.resume_step = record.resume_step, 0
        loss_sum, seen = record.partial_epoch.get("loss_sum", 0.0), int(record.partial_epoch.get("seen", 0))
        record.partial_epoch = {}
        stopped, steps = None, skip
        for _ in range(skip):  # replay the data order and augmentation of the steps already done
            next(batches)
        if skip:
            restore_rng_state(self._resume_rng)
        show, total = self._show_progress(), len(self.learner.train_loader)
        options = {"total": total, "initial": skip, "leave": False, "disable": None if show is None else not show}
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", **options)
        for images, masks in bar:
            lr = self.learner.lr_at(self._progress())
            try:
                loss = self.learner.train_step(images, masks, lr)
            except LossNotFinite as error:
                raise SegkitError(
                    None,
                    f"training stopped at epoch {epoch}: the loss became {error.value} "
                    f"(try a lower --lr); the last good checkpoint is {self.out / 'last.pt'}",
                ) from None
            loss_sum, seen, steps = loss_sum + loss * len(images), seen + len(images), steps + 1
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            stopped = self._stop_reason()
            if stopped is not None:
                if stopped.startswith("SIG") and steps < total:
                    record.partial_epoch = {"step": steps, "loss_sum": loss_sum, "seen": seen}
                break
        totals = all_reduce_sum(torch.tensor([loss_sum, float(seen)], dtype=torch.float64, device=self.device))
        return EpochResult(float(totals[0] / totals[1].clamp(min=1)), int(totals[1]), time.monotonic() - start, stopped)

    def _stop_reason(self) -> str | None:
        """Why training must stop now (a signal, or the time budget), agreed by all ranks."""
        reason = self.stop_signals.received or ("time budget" if self.clock.out_of_time() else None)
        if self.dist.enabled:  # every rank stops at the same step
            flag = all_reduce_sum(torch.tensor([float(reason is not None)], device=self.device))
            if flag.item() and reason is None:
                reason = self.stop_signals.received or "time budget"
        return reason

    def validate(self, weights: str = "raw") -> ValidationResult:
        """Score the ``raw`` or ``ema`` weights on the validation images at their original size."""
        return validate_model(
            self.learner.weights(weights),
            self.card,
            self.data.val_source,
            self.record.val_indices,
            device=self.device,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            sample_indices=self.samples.among(self.record.val_indices) if self.dist.is_main else (),
        )

    # ------------------------------------------------------------- checkpoints
    def checkpoint(self, epoch: int, weights: str = "raw", full: bool = False) -> Checkpoint:
        """A checkpoint of the ``raw`` or ``ema`` weights; ``full`` adds what resuming needs."""
        card = replace(self.card)
        facts = {"config": self.config.to_dict(), "plan": self.plan.to_dict() if self.plan is not None else {}}
        data = self.data.facts(self.config.data, len(self.record.val_indices))
        card.training = self.record.summary(epoch, weights, seconds=self.elapsed, data=data, **facts)
        resume = None
        if full:
            progress = {**self.record.progress(epoch), **self.clock.state(), "steps_done": self.learner.steps_done}
            resume = {**self.learner.state_dict(), "rng": rng_state(), "data": {"fingerprint": self.data_fingerprint}}
            resume["progress"] = progress
        return Checkpoint(card, self.learner.weights(weights).state_dict(), resume)

    def _save(self, name: str, checkpoint: Checkpoint) -> None:
        """Write a checkpoint atomically; a failed write stops the run with one line, older files intact."""
        path = self.out / name
        try:
            save_checkpoint(checkpoint, path)
        except (OSError, SegkitError) as error:
            problem = error.problem if isinstance(error, SegkitError) else f"cannot write ({error.strerror or error})"
            raise SegkitError(path, f"{problem}; the previous last.pt and best.pt are intact") from None
        for callback in self.callbacks:
            callback.on_checkpoint(self, path, checkpoint)

    # --------------------------------------------------------------------- run
    def fit(self) -> TrainResult:
        """Train until the epochs or the time budget are used up, a stop signal, or early stopping."""
        try:
            with self.stop_signals:
                return self._fit()
        finally:
            self.lock.release()
            cleanup_distributed()

    def _fit(self) -> TrainResult:
        if self.dist.is_main:
            if self.data.problems:  # images without masks ... are not trained on: say which
                logger.warning("%s", self.data.problems)
            if self.plan is not None:
                logger.info("%s", self.plan.format())
        measured = None if self.measured else self._race()
        if self.learner.keeps_resized:
            self.data.release_training_images()
        config = self.config
        if self.dist.is_main:
            text = config.to_yaml()
            atomic_write(self.out / "config.yaml", lambda temp: temp.write_text(text, encoding="utf-8"))
            for callback in self.callbacks:
                callback.on_train_start(self)
        if measured is not None:
            self._announce(measured)
        if self.dist.is_main and self.plan is not None:
            self.plan.save(self.out / "plan.json")
        stopped_because = f"reached {config.max_epochs} epochs"
        last_saved = time.monotonic()
        for epoch in range(self.record.start_epoch, config.max_epochs + 1):
            result = self.train_epoch(epoch)
            stop_signal = result.stopped if result.stopped is not None and result.stopped.startswith("SIG") else None
            if stop_signal is not None and self.record.partial_epoch:
                self._interrupted(epoch, stop_signal)
            out_of_time = result.stopped == "time budget" or self.clock.no_room_after(result.seconds)
            final = out_of_time or epoch == config.max_epochs
            row = result.row(epoch, self.learner.optimizer.param_groups[0]["lr"])
            self.history.append(row)
            validated = self.record.due_for_validation(epoch, final)
            if validated:
                self._validate_and_keep_best(epoch, final, row)
            row["elapsed"] = self.elapsed
            if self.dist.is_main:
                if validated or final or time.monotonic() - last_saved >= LAST_CHECKPOINT_INTERVAL:
                    self._save("last.pt", self.checkpoint(epoch, full=True))
                    last_saved = time.monotonic()
                if config.save_every and epoch % config.save_every == 0:
                    self._save(f"epoch_{epoch:03d}.pt", self.checkpoint(epoch))
                for callback in self.callbacks:
                    callback.on_epoch_end(self, epoch, row)
            if stop_signal is not None:
                self._interrupted(epoch, stop_signal)
            if out_of_time:
                stopped_because = f"time budget of {config.time_budget:.0f}s used"
                break
            if config.patience and self.record.validations_without_gain >= config.patience:
                stopped_because = f"no mIoU gain in {config.patience} validations (early stopping)"
                break
        return self._finish(stopped_because)

    def _interrupted(self, epoch: int, signal_name: str) -> None:
        """After a stop signal: write ``last.pt`` (down to the step) and stop with how to resume."""
        if self.dist.is_main:
            self._save("last.pt", self.checkpoint(epoch, full=True))
        raise RunInterrupted(self.out, signal_name)

    def _validate_and_keep_best(self, epoch: int, final: bool, row: dict[str, Any]) -> None:
        """Validate (EMA weights while training; raw and EMA at the end), keep the best as ``best.pt``."""
        start = time.monotonic()
        kinds = ["ema", "raw"] if final and self.learner.ema is not None else ["ema" if self.learner.ema else "raw"]
        results = {kind: self.validate(kind) for kind in kinds}
        kind = max(results, key=lambda name: -1.0 if math.isnan(results[name].miou) else results[name].miou)
        self.clock.last_validation_seconds = (time.monotonic() - start) / len(kinds)
        cost = self.clock.last_validation_seconds * len(kinds) + self.clock.save_seconds
        self.record.space_validations(cost, row["seconds"])
        metrics = results[kind].metrics
        row.update(validation_row(metrics, kind, time.monotonic() - start))
        improved = row["best"] = self.record.keep_best(epoch, metrics, kind)
        if self.dist.is_main:
            if improved or not (self.out / "best.pt").exists():
                self._save("best.pt", self.checkpoint(epoch, weights=kind))
            for callback in self.callbacks:
                callback.on_validation_end(self, epoch, metrics, results[kind].samples)

    def _finish(self, stopped_because: str) -> TrainResult:
        record = self.record
        result = TrainResult(
            out=self.out,
            best_checkpoint=self.out / "best.pt",
            last_checkpoint=self.out / "last.pt",
            best_metrics=record.best_metrics,
            history=record.history,
            stopped_because=stopped_because,
            never_predicted=never_predicted(record.best_metrics),
        )
        if self.dist.is_main:
            text = json.dumps(to_json_safe(record.best_metrics), indent=2)
            atomic_write(self.out / "metrics.json", lambda temp: temp.write_text(text, encoding="utf-8"))
            for callback in self.callbacks:
                callback.on_train_end(self, result)
        return result


def train(
    config: TrainConfig | None = None,
    progress: bool | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] | None = None,
    config_file: str | Path | None = None,
    **options: Any,
) -> TrainResult:
    """Train a model; the Python form of ``segkit train``.

    Args:
        config: a full :class:`TrainConfig`; or give the options as keyword arguments
            (``data=``, ``epochs=``, ``time_budget="10m"``, ``resume="runs/x/last.pt"`` ...)
            and the planner derives the rest.
        progress: show progress bars (``None``: when the output is a terminal).
        callbacks: extra :class:`~segkit.training.callbacks.Callback` hooks.
        config_file: a YAML file of options (``--config``); keyword options win.

    Example:
        >>> result = segkit.train(data="data/", time_budget="10m", out="runs/exp")
        >>> result.best_metrics["mIoU"], result.best_checkpoint
    """
    from segkit.config import resolve_options
    from segkit.training.console import ConsoleReport
    from segkit.training.loggers import create_loggers

    if config is None:
        config = resolve_options(options, config_file)
    elif options:
        config = TrainConfig.from_dict({**config.to_dict(), **options})
    trainer = Trainer(config, progress=progress)
    trainer.callbacks = [*create_loggers(trainer.config.logger, trainer.out), ConsoleReport(), *(callbacks or ())]
    return trainer.fit()
