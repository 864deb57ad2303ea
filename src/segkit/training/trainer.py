"""The training loop: plan, data, model, EMA, validation at original size, checkpoints, callbacks.

:class:`Trainer` runs one training described by a :class:`~segkit.config.TrainConfig`
(single process or under ``torchrun``). What it builds comes from plain functions
(:mod:`segkit.training.builders`); its public seams are :meth:`Trainer.train_epoch`,
:meth:`Trainer.validate`, :meth:`Trainer.fit` and the :class:`~segkit.training.callbacks.Callback`
hooks, which loggers, benchmarks and tests use instead of private methods.

A run never loses work: ``last.pt`` holds everything ``--resume`` needs (down to the
step inside an epoch after a stop signal), checkpoints are written atomically, a second
run into the same folder is refused, and a failed write stops the run with one line while
the previous checkpoints stay intact.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from segkit.checkpoint import Checkpoint, ModelCard, TrainingSummary, load_checkpoint, save_checkpoint
from segkit.config import TrainConfig
from segkit.device import resolve_device
from segkit.errors import SegkitError
from segkit.files import atomic_write, to_json_safe
from segkit.training.builders import TrainingData, data_fingerprint, open_training_data
from segkit.training.callbacks import Callback, TrainResult
from segkit.training.distributed import (
    DistributedInfo,
    all_reduce_sum,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
)
from segkit.training.learner import Learner, LossNotFinite
from segkit.training.race import (
    FINAL_RESERVE,
    VALIDATION_CAP,
    VALIDATION_SHARE,
    Measured,
    Race,
    RaceCandidate,
    expected_epochs,
    subset_within,
    validation_pixels,
)
from segkit.training.run_folder import RunLock, StopSignals, choose_run_folder
from segkit.training.validation import ValidationResult, never_predicted, validate_model

if TYPE_CHECKING:
    from timm.utils import ModelEmaV3
    from torch.utils.data import DataLoader

    from segkit.data.dataset import SegmentationDataset
    from segkit.planning.planner import Plan

logger = logging.getLogger(__name__)

# No epoch starts with less time left than this share of the one before.
LAST_EPOCH_SHARE = 0.25
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


def rng_state() -> dict[str, Any]:
    numpy_state = cast(tuple[Any, ...], np.random.get_state())
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs one training described by a :class:`TrainConfig` (single process or ``torchrun``).

    Args:
        config: the options; those the user did not set (``config.user_options``) are
            derived by the planner first, unless ``config.plan`` is off.
        callbacks: hooks called on the main process (loggers, benchmarks, tests).
        progress: show progress bars (``None``: when the output is a terminal).

    With a time budget, :meth:`fit` starts with the planning race
    (:mod:`segkit.training.race`): the planner's candidate recipes train side by side and
    the best goes on; with one candidate, or a budget too short to race, the planned recipe
    trains a short measured slice instead. Either way the epoch estimate and the size of
    validation come from measurements of the real training path.

    Public attributes: ``config`` (resolved; after the race, the winner's), ``plan`` (the
    planner's choices, or ``None``), ``out``, ``learner`` (the
    :class:`~segkit.training.learner.Learner` being trained) and its ``classes``, ``card``,
    ``model``, ``ema``, ``optimizer`` ..., ``history``, ``device``, ``data``
    (:class:`~segkit.training.builders.TrainingData`).
    """

    def __init__(
        self, config: TrainConfig, callbacks: list[Callback] | tuple[Callback, ...] = (), progress: bool | None = None
    ) -> None:
        self.clock_start = time.monotonic()
        self.elapsed_before = 0.0
        self.progress = progress
        self.callbacks = list(callbacks)
        self.device = resolve_device(config.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        self.dist: DistributedInfo = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
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
        self.data: TrainingData = open_training_data(config)
        self.data_fingerprint = data_fingerprint(self.data)
        if resumed is not None:
            self._check_same_data(config, resumed)
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
        self.learner = Learner(config, self.data, self.device, self.dist, progress=self._show_progress())
        logger.info(
            "data: %d training, %d validation images; %d classes (%s%s); %s",
            len(self.learner.train_set),
            len(self.data.val_indices),
            len(self.classes),
            ", ".join(self.classes),
            f", from {self.data.classes_origin}" if self.data.classes_origin else "",
            "binary mode (one sigmoid channel)" if self.learner.binary else "multi-class mode (softmax)",
        )
        self.history: list[dict[str, Any]] = []
        self.best_metric = -math.inf
        self.best_metrics: dict[str, Any] = {}
        self.best_epoch = 0
        self.best_weights = "raw"
        self.validations_without_gain = 0
        self.start_epoch, self.resume_step = 1, 0
        self.last_validation_seconds = 0.0
        self.save_seconds = 0.0  # writing last.pt, measured after the race
        self.loser_seconds = 0.0  # of this run, spent on recipes that lost the race
        self.val_indices = list(
            self.data.val_indices
        )  # the validation images scored (a subset when they would not fit)
        self.val_every = config.val_every
        self.partial_epoch: dict[str, float] = {}
        self.stop_signals = StopSignals()
        self.measured = resumed is not None or not config.time_budget or self.dist.enabled
        if resumed is not None:
            self._restore(resumed)

    # ------------------------------------------------ the Learner being trained
    @property
    def classes(self) -> list[str]:
        return self.learner.classes

    @property
    def card(self) -> ModelCard:
        return self.learner.card

    @property
    def model(self) -> nn.Module:
        return self.learner.model

    @property
    def ema(self) -> ModelEmaV3 | None:
        return self.learner.ema

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.learner.optimizer

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.learner.scaler

    @property
    def criterion(self) -> nn.Module:
        return self.learner.criterion

    @property
    def train_set(self) -> SegmentationDataset:
        return self.learner.train_set

    @property
    def train_loader(self) -> DataLoader:
        return self.learner.train_loader

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return self.learner.autocast_dtype

    # ------------------------------------------------------------------ set-up
    def _check_same_data(self, config: TrainConfig, checkpoint: Checkpoint) -> None:
        """A resumed run trains on what it started with: the same classes (else an error) and images (else --force)."""
        card, path = checkpoint.card, config.resume
        if list(self.data.classes) != list(card.classes):
            raise SegkitError(
                path,
                f"the run was trained on the classes {card.classes}, but {config.data} has {self.data.classes}: "
                "resume it with its own data, or start a new run",
            )
        started = (checkpoint.resume or {}).get("data", {}).get("fingerprint")
        if started and started != self.data_fingerprint:
            if not config.force:
                raise SegkitError(
                    path,
                    f"{config.data} holds other images than the run started with (same classes); add --force to "
                    "resume on them anyway (best.pt then compares scores from different validation images)",
                )
            logger.warning("resuming on other images than the run started with (--force)")

    def _restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.resume
        if state is None:
            raise SegkitError(self.config.resume, "has no optimiser state (resume from last.pt, not best.pt)")
        self.learner.load_state_dict(checkpoint.state_dict, state)
        training = checkpoint.card.training
        self.history = list(training.history)
        self.best_metric = -math.inf if training.best_metric is None else float(training.best_metric)
        self.best_metrics, self.best_epoch = dict(training.metrics), training.best_epoch
        progress = state["progress"]
        self.best_weights = str(progress["best_weights"])
        self.learner.steps_done, self.elapsed_before = int(progress["steps_done"]), float(progress["elapsed"])
        self.start_epoch, self.resume_step = int(progress["epoch"]), int(progress["step"])
        self.partial_epoch = dict(progress.get("partial", {}))
        self.validations_without_gain = int(progress["validations_without_gain"])
        self.last_validation_seconds = float(progress["last_validation_seconds"])
        self.val_every = int(progress["val_every"])
        self.loser_seconds = float(progress.get("loser_seconds", 0.0))
        if "val_indices" in progress:
            self.val_indices = [int(index) for index in progress["val_indices"]]
        self._resume_rng = state["rng"]
        restore_rng_state(state["rng"])
        where = f"epoch {self.start_epoch}" + (f", step {self.resume_step}" if self.resume_step else "")
        logger.info("resumed from %s at %s", self.config.resume, where)

    def _build_learner(self, config: TrainConfig) -> Learner:
        return Learner(config, self.data, self.device, self.dist, progress=False)

    def _race(self) -> Measured:
        """Race the plan's candidates (or measure the one recipe); go on with the winner, sized to the budget."""
        budget = float(self.config.time_budget or 0.0)
        candidates = [RaceCandidate("as configured", self.config)]
        skip = "--no-plan" if self.plan is None else "" if self.config.race else "--no-race"
        if not skip and self.plan is not None:
            candidates = [
                RaceCandidate(
                    candidate.label,
                    self.plan.apply(self.config, candidate),
                    candidate.choices,
                    candidate.steps_per_second,
                )
                for candidate in self.plan.candidates
            ] or candidates
        before = self.elapsed  # opening, decoding and planning: part of every candidate's schedule
        race = Race(
            candidates,
            build=self._build_learner,
            progress=lambda seconds: self._progress_at(before + seconds),
            stop=lambda: self.stop_signals.received,
            val_source=self.data.val_source,
            val_indices=self.data.val_indices,
            device=self.device,
            budget=budget,
            first=self.learner,
            skip=skip,
        )
        self.loser_seconds = race.planned_loser_seconds  # until the race is over: what it plans to spend
        winner, self.learner, measured = race.run()
        self.config = self.learner.config
        self.loser_seconds = race.record.loser_seconds
        if measured.validation_seconds_per_pixel is not None:
            self._size_validation(measured.validation_seconds_per_pixel)
        if self.plan is not None:
            self.plan.adopt(candidates[winner].choices if race.record.raced else {}, race.record.to_dict())
        self.measured = True
        return measured

    def _announce(self, measured: Measured) -> None:
        """Write the winner's ``last.pt`` (timed: checkpoints count as validation's cost), then the epoch estimate."""
        start = time.monotonic()
        if self.dist.is_main:
            self._save("last.pt", self.checkpoint(0, full=True))
        self.save_seconds = time.monotonic() - start
        epochs = self._expected_epochs(measured.images_per_second)
        if self.plan is not None:
            self.plan.epochs = epochs
        logger.info(
            "expected: ~%d epochs in the budget (measured on this data: %.1f training images/s%s)",
            epochs,
            measured.images_per_second,
            f", validation {self.last_validation_seconds:.1f}s on {len(self.val_indices)} images"
            if self.last_validation_seconds
            else "",
        )

    def _size_validation(self, seconds_per_pixel: float) -> None:
        """Score as many validation images (evenly spread) as fit :data:`VALIDATION_CAP` of the budget per validation."""
        pixels = validation_pixels(self.data.val_source, self.data.val_indices)
        cap = VALIDATION_CAP * float(self.config.time_budget or math.inf)
        self.val_indices = subset_within(self.data.val_indices, pixels, seconds_per_pixel, cap)
        self.last_validation_seconds = seconds_per_pixel * sum(pixels[index] for index in self.val_indices)
        if len(self.val_indices) < len(self.data.val_indices):
            logger.info(
                "validation scores %d of the %d validation images (evenly spread, each at its original size): "
                "all of them would take %.0fs, more than %.0f%% of the budget",
                len(self.val_indices),
                len(self.data.val_indices),
                seconds_per_pixel * sum(pixels.values()),
                100 * VALIDATION_CAP,
            )

    def _expected_epochs(self, images_per_second: float) -> int:
        """Epochs the rest of the budget allows at the measured speed, validations included."""
        return expected_epochs(
            len(self.learner.train_set),
            images_per_second,
            self.last_validation_seconds + self.save_seconds,
            self._time_limit() - self.elapsed,
            self.val_every,
        )

    # ---------------------------------------------------------------- progress
    @property
    def elapsed(self) -> float:
        """Seconds of this run so far (earlier sessions of a resumed run included)."""
        return self.elapsed_before + time.monotonic() - self.clock_start

    def _time_limit(self) -> float:
        """When training must stop so that the final validations and checkpoints fit the budget."""
        final_validations = 2 if self.ema is not None else 1  # the last one scores raw and EMA weights
        reserve = FINAL_RESERVE * final_validations * self.last_validation_seconds + 3.0
        return float(self.config.time_budget or math.inf) - reserve

    def _progress_at(self, own_seconds: float) -> float:
        """Schedule position of a recipe that has had ``own_seconds`` of this run (the race's losers excluded)."""
        return own_seconds / max(self._time_limit() - self.loser_seconds, 1e-9)

    def _progress(self) -> float:
        """Fraction of training done: elapsed time of the budget, or steps of all epochs."""
        if self.config.time_budget:
            return self._progress_at(self.elapsed - self.loser_seconds)
        total = self.config.max_epochs * max(len(self.train_loader), 1)
        return self.learner.steps_done / total

    @property
    def max_epochs_estimate(self) -> int:
        """Epochs expected in this run: ``--epochs``, or what the budget allows at the pace so far."""
        if not self.config.time_budget:
            return self.config.max_epochs
        done = len(self.history)
        if not done:
            return self.plan.epochs if self.plan is not None and self.plan.epochs else 0
        first = self.history[0]
        per_epoch = (self.elapsed - first.get("elapsed", self.elapsed) + first["seconds"]) / done
        return done + max(0, int((self._time_limit() - self.elapsed) / max(per_epoch, 1e-9)))

    def _show_progress(self) -> bool | None:
        if not self.dist.is_main:
            return False
        return self.progress

    # ---------------------------------------------------------------- training
    def train_epoch(self, epoch: int) -> EpochResult:
        """One pass over the training data (or the rest of it, after a mid-epoch resume).

        Stops early at a step boundary when the time budget is used or a stop signal came.
        Every epoch's shuffling and augmentation depend only on ``(seed, epoch)``, so a
        resumed run repeats exactly what the uninterrupted run would have done.
        """
        start = time.monotonic()
        batches = self.learner.start_epoch(epoch)
        skip, self.resume_step = self.resume_step, 0
        loss_sum, seen = self.partial_epoch.get("loss_sum", 0.0), int(self.partial_epoch.get("seen", 0))
        self.partial_epoch = {}
        stopped, steps = None, skip
        for _ in range(skip):  # replay the data order and augmentation of the steps already done
            next(batches)
        if skip:
            restore_rng_state(self._resume_rng)
        show = self._show_progress()
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}",
            total=len(self.train_loader),
            initial=skip,
            leave=False,
            disable=None if show is None else not show,
            unit="batch",
        )
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
            loss_sum += loss * len(images)
            seen += len(images)
            steps += 1
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            stopped = self._stop_reason()
            if stopped is not None:
                if stopped.startswith("SIG") and steps < len(self.train_loader):
                    self.partial_epoch = {"step": steps, "loss_sum": loss_sum, "seen": seen}
                break
        totals = all_reduce_sum(torch.tensor([loss_sum, float(seen)], dtype=torch.float64, device=self.device))
        return EpochResult(float(totals[0] / totals[1].clamp(min=1)), int(totals[1]), time.monotonic() - start, stopped)

    def _stop_reason(self) -> str | None:
        """Why training must stop now (a signal, or the time budget), agreed by all ranks."""
        reason = self.stop_signals.received
        if reason is None and self.config.time_budget and self.elapsed >= self._time_limit():
            reason = "time budget"
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
            self.val_indices,
            device=self.device,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            num_samples=self.config.num_samples if self.dist.is_main else 0,
        )

    def _due_for_validation(self, epoch: int, final: bool) -> bool:
        """Validate after the first and the last epoch, and every ``val_every`` epochs in between.

        With ``--val-every 0`` the interval is set once, after the first validation, so that
        validation takes at most :data:`VALIDATION_SHARE` of the time (a whole number of epochs:
        which epochs are validated does not depend on the machine's speed after that).
        """
        if final or epoch == 1 or not self.val_every:
            return True
        return epoch % self.val_every == 0

    # ------------------------------------------------------------- checkpoints
    def checkpoint(self, epoch: int, weights: str = "raw", full: bool = False) -> Checkpoint:
        """A checkpoint of the ``raw`` or ``ema`` weights; ``full`` adds what resuming needs."""
        card = replace(self.card)
        card.training = TrainingSummary(
            epoch=epoch,
            best_epoch=self.best_epoch,
            best_metric=self.best_metric if self.best_metrics else None,
            metrics=self.best_metrics,
            history=self.history,
            config=self.config.to_dict(),
            plan=self.plan.to_dict() if self.plan is not None else {},
            seconds=self.elapsed,
            weights=weights,
            data={
                "path": self.config.data,
                "train_images": len(self.data.train_indices),
                "val_images": len(self.data.val_indices),
                "val_images_scored": len(self.val_indices),
                "classes_from": self.data.classes_origin,
            },
        )
        state_dict = self.learner.weights(weights).state_dict()
        return Checkpoint(card, state_dict, self._resume_state(epoch) if full else None)

    def _resume_state(self, epoch: int) -> dict[str, Any]:
        partial = self.partial_epoch
        state: dict[str, Any] = {
            **self.learner.state_dict(),
            "rng": rng_state(),
            "data": {"fingerprint": self.data_fingerprint},
            "progress": {
                "epoch": epoch if partial else epoch + 1,
                "step": int(partial.get("step", 0)),
                "partial": {key: float(value) for key, value in partial.items() if key != "step"},
                "steps_done": self.learner.steps_done,
                "elapsed": self.elapsed,
                "validations_without_gain": self.validations_without_gain,
                "best_weights": self.best_weights,
                "last_validation_seconds": self.last_validation_seconds,
                "val_every": self.val_every,
                "loser_seconds": self.loser_seconds,
                "val_indices": list(self.val_indices),
            },
        }
        return state

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
        if (
            self.learner.train_set.cached
            and self.config.preprocess.resize != "crop"
            and self.data.train_source is not self.data.val_source
        ):
            self.data.train_source.release(self.data.train_indices)  # kept resized in the dataset now
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
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, config.max_epochs + 1):
            result = self.train_epoch(epoch)
            stop_signal = result.stopped if result.stopped is not None and result.stopped.startswith("SIG") else None
            if stop_signal is not None and self.partial_epoch:
                self._interrupted(epoch, stop_signal)
            # the last epoch is the one that reaches the time limit, or after which too little is left for
            # a quarter of another: it gets the final validation
            out_of_time = result.stopped == "time budget" or (
                bool(config.time_budget) and self.elapsed + LAST_EPOCH_SHARE * result.seconds > self._time_limit()
            )
            final = out_of_time or epoch == config.max_epochs
            row: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": result.loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": result.seconds,
                "images_per_second": result.images / max(result.seconds, 1e-9),
            }
            self.history.append(row)
            validated = self._due_for_validation(epoch, final)
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
            if config.patience and self.validations_without_gain >= config.patience:
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
        kinds = ["ema"] if self.ema is not None else ["raw"]
        if final and self.ema is not None:
            kinds.append("raw")
        results = {kind: self.validate(kind) for kind in kinds}
        kind = max(results, key=lambda name: -1.0 if math.isnan(results[name].miou) else results[name].miou)
        chosen = results[kind]
        self.last_validation_seconds = (time.monotonic() - start) / len(kinds)
        if not self.val_every:  # validating and its checkpoints: at most VALIDATION_SHARE of the time
            epoch_seconds = max(row["seconds"], 1e-9)
            share = VALIDATION_SHARE / (1 - VALIDATION_SHARE)
            cost = self.last_validation_seconds * len(kinds) + self.save_seconds
            self.val_every = max(1, math.ceil(cost / (share * epoch_seconds)))
        metrics = chosen.metrics
        row.update(
            {
                "val_mIoU": metrics["mIoU"],
                "val_mDice": metrics["mDice"],
                "val_pixel_accuracy": metrics["pixel_accuracy"],
                "val_weights": kind,
                "val_seconds": time.monotonic() - start,
            }
        )
        row.update({f"val_iou_{name}": values["iou"] for name, values in metrics["per_class"].items()})
        improved = metrics["mIoU"] is not None and metrics["mIoU"] > self.best_metric
        if improved:
            self.best_metric, self.best_metrics, self.best_epoch = float(metrics["mIoU"]), metrics, epoch
            self.best_weights = kind
            self.validations_without_gain = 0
        else:
            self.validations_without_gain += 1
        row["best"] = improved
        if self.dist.is_main:
            if improved or not (self.out / "best.pt").exists():
                self._save("best.pt", self.checkpoint(epoch, weights=kind))
            for callback in self.callbacks:
                callback.on_validation_end(self, epoch, metrics, chosen.samples)

    def _finish(self, stopped_because: str) -> TrainResult:
        missing = never_predicted(self.best_metrics)
        result = TrainResult(
            out=self.out,
            best_checkpoint=self.out / "best.pt",
            last_checkpoint=self.out / "last.pt",
            best_metrics=self.best_metrics,
            history=self.history,
            stopped_because=stopped_because,
            never_predicted=missing,
        )
        if self.dist.is_main:
            import json

            text = json.dumps(to_json_safe(self.best_metrics), indent=2)
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
