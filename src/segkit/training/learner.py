"""One recipe's trainable state and its training step.

A :class:`Learner` holds what training one recipe needs — the training Dataset resized for
its input size, the DataLoader, the model, loss, optimiser, gradient scaler and EMA — and
takes one optimisation step at a time (:meth:`Learner.train_step`). The
:class:`~segkit.training.trainer.Trainer` trains one Learner; the planning race
(:mod:`segkit.training.race`) trains several side by side on the same decoded images and
hands the winner to the trainer, which continues it where the race stopped.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from segkit.checkpoint import ModelCard
from segkit.config import TrainConfig
from segkit.errors import SegkitError
from segkit.models.base import SegmentationModel
from segkit.training.builders import TrainingData, build_loss, build_model, build_optimizer, is_binary, model_kwargs
from segkit.training.distributed import DistributedInfo
from segkit.training.schedule import lr_factor

if TYPE_CHECKING:
    from timm.utils import ModelEmaV3

    from segkit.data.dataset import SegmentationDataset

logger = logging.getLogger(__name__)


class LossNotFinite(FloatingPointError):
    """The training loss became NaN or infinite (the learning rate is too high for this recipe)."""

    def __init__(self, value: float) -> None:
        super().__init__(f"the loss became {value}")
        self.value = value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The random state of Python, numpy and PyTorch (CPU and CUDA): saved in ``last.pt``."""
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
    """Restore what :func:`rng_state` saved."""
    random.setstate(state["python"])
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class Learner:
    """The dataset, loader, model, loss, optimiser, scaler and EMA of one recipe (``config``).

    Args:
        config: the recipe, every option resolved.
        data: the run's decoded samples (shared by every Learner of a run).
        device: where it trains.
        dist: the ``torchrun`` process group (the global batch is split across it).
        progress: show the decoding progress bar (``None``: on a terminal).

    Attributes:
        card: the model card of this recipe (classes, preprocessing, model).
        steps_done: optimiser steps taken; ``images_seen``: training images (or crops) seen.
        seconds: wall time spent on this Learner (building it, training it, validating it),
            kept by whoever drives it (:meth:`Trainer.fit`, the race).
    """

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingData,
        device: torch.device,
        dist: DistributedInfo | None = None,
        progress: bool | None = None,
    ) -> None:
        from segkit.data.dataset import SegmentationDataset, class_pixel_counts

        self.config = config
        self.device = device
        self.dist = dist or DistributedInfo()
        seed_everything(config.seed)
        self.classes = list(data.classes)
        self.binary = is_binary(config, self.classes)
        palette = None if data.color_table is None else data.color_table.class_colors(len(self.classes))
        self.card = ModelCard.create(
            config.model,
            self.classes,
            config.preprocess,
            binary=self.binary,
            model_kwargs=model_kwargs(config),
            palette=palette,
            threshold=config.threshold,
            ignore_index=config.preprocess.ignore_index,
        )
        self.train_set: SegmentationDataset = SegmentationDataset(
            data.train_source,
            config.preprocess,
            train=True,
            indices=data.train_indices,
            oversample=config.oversample,
        )
        self.train_set.preload(max(config.num_workers, 2), progress=progress)
        counts = class_pixel_counts(self.train_set)
        self.class_shares = (counts.pixels / max(int(counts.pixels.sum()), 1)).tolist()
        self.train_set.use_class_shares(self.class_shares)
        self.train_loader = self._train_loader()
        self.model: nn.Module = build_model(config, self.card, device)
        self.per_image_counts = counts.per_image
        self.criterion = build_loss(config, self.classes, self.binary, counts.per_image, device)
        self.optimizer = build_optimizer(config, self.model)
        self.autocast_dtype = {"bf16": torch.bfloat16, "16-mixed": torch.float16}.get(config.precision)
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=config.precision == "16-mixed" and device.type == "cuda"
        )
        self.ema: ModelEmaV3 | None = self._new_ema() if config.ema else None
        self.train_model: nn.Module = self._wrap()
        self.steps_done = 0
        self.images_seen = 0
        self.seconds = 0.0
        self._stream: Iterator[Any] | None = None
        self._stream_epoch = 0

    def use_class_weights(self, class_weights: Any) -> None:
        """Train on with other ``class_weights`` (``"auto"``, a list, or None): the loss is built again."""
        self.config = replace(self.config, class_weights=class_weights)
        self.criterion = build_loss(self.config, self.classes, self.binary, self.per_image_counts, self.device)

    # ------------------------------------------------------------------ set-up
    def _train_loader(self) -> DataLoader:
        config = self.config
        batch_size = config.batch_size
        if self.dist.enabled:
            if batch_size % self.dist.world_size:
                raise SegkitError(
                    None, f"--batch-size {batch_size} is not divisible by {self.dist.world_size} processes"
                )
            batch_size //= self.dist.world_size
        self.train_sampler: DistributedSampler | None = (
            DistributedSampler(self.train_set, shuffle=True, seed=config.seed, drop_last=True)
            if self.dist.enabled
            else None
        )
        self.shuffle_generator = torch.Generator()
        return DataLoader(
            self.train_set,
            batch_size=batch_size,
            shuffle=self.train_sampler is None,
            sampler=self.train_sampler,
            drop_last=len(self.train_set) >= 2 * batch_size,
            generator=self.shuffle_generator,
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=config.num_workers > 0,
        )

    def _new_ema(self) -> ModelEmaV3:
        from timm.utils import ModelEmaV3

        # Warm-up (power 3/4) reaches the decay cap only after ~10k steps: short CPU runs
        # average over their last few hundred steps, long ones over --ema-decay's horizon.
        return ModelEmaV3(self.model, decay=self.config.ema_decay, use_warmup=True, warmup_power=0.75)

    def _wrap(self) -> nn.Module:
        """The module the training step calls: DDP around the model under ``torchrun``, compiled with ``--compile``."""
        module: nn.Module = self.model
        if self.dist.enabled:
            module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        return cast(nn.Module, torch.compile(module)) if self.config.compile else module

    # ----------------------------------------------------------------- training
    def start_epoch(self, epoch: int) -> Iterator[Any]:
        """The batches of ``epoch``: shuffling and augmentation depend only on ``(seed, epoch)``."""
        self._stream = None  # the race's endless stream ends here (one live iterator per loader)
        self.set_encoder_frozen(epoch)
        self.train_model.train()
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)
        seed_everything(self.config.seed * 1000 + epoch)
        self.shuffle_generator.manual_seed(self.config.seed * 1000 + epoch)
        return iter(self.train_loader)

    def next_batch(self) -> Any:
        """The next batch of an endless stream over epochs (the race trains in slices of time, not epochs)."""
        while True:
            if self._stream is None:
                self._stream_epoch += 1
                self._stream = self.start_epoch(self._stream_epoch)
            batch = next(self._stream, None)
            if batch is not None:
                return batch
            self._stream = None

    def lr_at(self, progress: float) -> float:
        """The scheduled learning rate at ``progress`` (fraction of the run's training done)."""
        config = self.config
        warmup = (
            min(0.05, config.warmup_epochs * 0.05) if config.time_budget else config.warmup_epochs / config.max_epochs
        )
        return config.lr * lr_factor(config.scheduler, progress, warmup)

    def train_step(self, images: torch.Tensor, masks: torch.Tensor, lr: float) -> float:
        """One optimisation step on a batch of uint8 images and int64 masks; returns the loss.

        Raises:
            LossNotFinite: the loss is NaN or infinite (nothing was updated).
        """
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images, masks = self.to_device(images, masks)
        with self.autocast():
            outputs = self.train_model(images)
            loss = self.criterion(outputs, masks)
        value = float(loss.item())
        if not np.isfinite(value):
            raise LossNotFinite(value)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps_done += 1
        self.images_seen += len(images)
        if self.ema is not None:
            self.ema.update(self.model, step=self.steps_done)
        return value

    def set_encoder_frozen(self, epoch: int) -> None:
        """Freeze the encoder for the first ``--freeze-encoder`` epochs, then train it."""
        if not self.config.freeze_encoder:
            return
        frozen = epoch <= self.config.freeze_encoder
        model = self.model
        if not isinstance(model, SegmentationModel):
            raise SegkitError(None, f"--freeze-encoder: {type(model).__name__} is not a segkit model with an encoder")
        if model.encoder_frozen != frozen:
            model.freeze_encoder(frozen)
            logger.info("epoch %d: encoder %s", epoch, "frozen" if frozen else "unfrozen")
            self.train_model = self._wrap()  # DDP registers only parameters that need gradients

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to_device(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images normalised on the device (channels-last when asked), masks moved."""
        from segkit.data.transforms import normalize

        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        images = normalize(images, self.config.preprocess.mean, self.config.preprocess.std)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks

    # ------------------------------------------------------------------- state
    @property
    def epoch_images(self) -> int:
        """Training images (or crops) one epoch of this process trains: whole batches only where the last is dropped."""
        samples = len(self.train_sampler) if self.train_sampler is not None else len(self.train_set)
        return min(len(self.train_loader) * int(self.train_loader.batch_size or 1), samples)

    @property
    def epochs_seen(self) -> float:
        """Epochs' worth of training images (or crops) this Learner has trained on so far (a race's slices too)."""
        return self.images_seen / max(self.epoch_images, 1)

    @property
    def keeps_resized(self) -> bool:
        """Whether the training dataset keeps resized copies of its images (so the decoded originals can go)."""
        return bool(self.train_set.cached) and self.config.preprocess.resize != "crop"

    def weights(self, kind: str = "raw") -> nn.Module:
        """The ``raw`` model or its ``ema`` average (the raw model when there is no EMA)."""
        return self.ema.module if kind == "ema" and self.ema is not None else unwrap(self.model)

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, scaler and EMA state (what resuming needs besides the model weights)."""
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_state_dict(self, model_state: dict[str, Any], state: dict[str, Any]) -> None:
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and "ema" in state:
            self.ema.module.load_state_dict(state["ema"])
