"""The planner: the training recipe derived from the data, the machine and the time budget.

In the spirit of nnU-Net's experiment planner, but for a time budget rather than a GPU
memory target. From a :class:`~segkit.planning.fingerprint.Fingerprint` of the training
data and a few seconds of measurement on the device (:mod:`segkit.planning.probe`) it
chooses, for every option the user did not set:

- **model**: an encoder pretrained on ImageNet whenever its weights can be had (found in
  the caches, or downloadable), since that is worth more than anything else on small
  datasets; otherwise segkit's plain U-Net, wider on a GPU;
- **resize policy and resolution**: whole images (letterbox) when they fit the input limit,
  else random crops at native resolution, predicted window by window (tiling). Whole images
  are shrunk only when the budget would otherwise give fewer than :data:`MIN_EPOCHS` epochs,
  and never so far that the thin structures of a class (its fingerprint *width*) get
  thinner than :data:`MIN_OBJECT_PIXELS` pixels; if the budget is still short, a narrower
  network trains from scratch instead;
- **batch size** from the input size (and the GPU's memory), **precision** by measured
  speed (bf16 where the CPU or GPU has it), the **learning rate**, the **loss** and the
  expected **number of epochs**.

Every choice comes with a one-line reason; the plan is printed and saved as ``plan.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from segkit.checkpoint import ModelSpec
from segkit.data.io import atomic_write
from segkit.planning.fingerprint import Fingerprint, compute_fingerprint
from segkit.planning.probe import Measurement, bf16_supported, measure_training
from segkit.prediction.tiling import GRID
from segkit.training.config import TrainConfig

logger = logging.getLogger(__name__)

MIN_OBJECT_PIXELS = 3.0  # the thinnest class keeps at least this width after resizing
MIN_CLASS_SHARE = 0.001  # classes rarer than this do not constrain the resolution
MIN_SCALE = 0.25
MIN_EPOCHS = 25  # epochs (training inputs per training image) the budget should allow
NARROWER_BELOW = 0.8  # a narrower network only below this share of MIN_EPOCHS
WHOLE_IMAGE_LIMIT = {"cpu": 512, "gpu": 1024}  # larger images are trained on crops
CROP_SIZE = {"cpu": 384, "gpu": 768}
BATCH_PIXELS = 8 * 256 * 256  # CPU: pixels per batch (throughput is flat in the batch size there)
GPU_MEMORY_SHARE = 0.6
MIN_STEPS_PER_EPOCH = 8  # GPU batches are capped so that an epoch still has this many optimiser steps
BF16_MIN_SPEEDUP = 1.25
TRAIN_SHARE = 0.8  # of the remaining budget spent in training steps (the rest: validation, saving)
PRETRAINED_MODELS = {"cpu": ("mobilenetv2-unet", "unet-resnet34"), "gpu": ("unet-resnet34", "mobilenetv2-unet")}
# segkit's U-Net from scratch: the widths tried, widest first; a narrower one only when the
# budget would otherwise allow clearly fewer than MIN_EPOCHS epochs at the smallest scale allowed.
SCRATCH_MODEL = "unet"
SCRATCH_WIDTHS = {"cpu": (16, 8), "gpu": (32, 16)}


@dataclass
class Choice:
    """One planned option: its dotted name, value, why, and whether the user set it instead."""

    option: str
    value: Any
    reason: str
    user: bool = False


@dataclass
class Plan:
    """The planner's output: the choices with their reasons, the fingerprint and the measurements."""

    choices: list[Choice]
    fingerprint: Fingerprint
    device: str
    measurements: list[Measurement] = field(default_factory=list)
    epochs: int | None = None
    seconds: float = 0.0

    def apply(self, config: TrainConfig) -> TrainConfig:
        """``config`` with every planned (not user-set) choice filled in."""
        values = {choice.option: choice.value for choice in self.choices if not choice.user}
        preprocess = {name.split(".", 1)[1]: value for name, value in values.items() if name.startswith("preprocess.")}
        top = {name: value for name, value in values.items() if "." not in name}
        return replace(config, **top, preprocess=replace(config.preprocess, **preprocess))

    def format(self) -> str:
        """The printout: the data, then one line per choice with its reason."""
        lines = [f"plan ({self.device}, {self.seconds:.1f}s): {self.fingerprint.describe()}"]
        for choice in self.choices:
            value = choice.value
            shown = (
                "x".join(map(str, value))
                if isinstance(value, (tuple, list)) and value and isinstance(value[0], int)
                else value
            )
            lines.append(
                f"  {choice.option.split('.')[-1]:<14} {shown!s:<22} {'(yours) ' if choice.user else ''}{choice.reason}"
            )
        if self.epochs:
            lines.append(f"  {'epochs':<14} ~{self.epochs:<21} expected in the time budget")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        from segkit.evaluation.metrics import to_json_safe

        return to_json_safe(
            {
                "device": self.device,
                "choices": [
                    {
                        "option": c.option,
                        "value": list(c.value) if isinstance(c.value, tuple) else c.value,
                        "reason": c.reason,
                        "user": c.user,
                    }
                    for c in self.choices
                ],
                "expected_epochs": self.epochs,
                "fingerprint": self.fingerprint.to_dict(),
                "measurements": [
                    {
                        "size": list(m.size),
                        "batch_size": m.batch_size,
                        "precision": m.precision,
                        "images_per_second": round(m.images_per_second, 3),
                        "peak_memory_bytes": m.peak_memory_bytes,
                    }
                    for m in self.measurements
                ],
                "seconds": round(self.seconds, 2),
            }
        )

    def save(self, path: Path) -> None:
        text = json.dumps(self.to_dict(), indent=2)
        atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


class _Planner:
    """Builds a :class:`Plan` step by step; each step reads the choices made before it."""

    def __init__(self, config: TrainConfig, fingerprint: Fingerprint, device: torch.device, seconds_left: float | None):
        self.config = config
        self.fingerprint = fingerprint
        self.device = device
        self.kind = "gpu" if device.type == "cuda" else "cpu"
        self.seconds_left = seconds_left
        self.choices: list[Choice] = []
        self.measurements: list[Measurement] = []
        self.epochs: int | None = None
        self.widths: list[int] = []

    def choose(self, option: str, value: Any, reason: str) -> Any:
        """Record a choice unless the user set the option; return the value in force."""
        if self.config.is_set(option):
            current = _current(self.config, option)
            self.choices.append(Choice(option, current, "", user=True))
            return current
        self.choices.append(Choice(option, value, reason))
        return value

    # -------------------------------------------------------------- steps
    def model(self) -> ModelSpec:
        from segkit.models.weights import encoder_name, weights_status

        config = self.config
        if not config.is_set("pretrained") or config.pretrained:
            candidates = [config.model] if config.is_set("model") else list(PRETRAINED_MODELS[self.kind])
            for name in candidates:
                spec = ModelSpec(name, 1, 3, dict(config.model_kwargs) if config.is_set("model_kwargs") else {})
                encoder = encoder_name(spec) if _registered(name) else None
                if encoder is None:
                    continue
                status = weights_status(encoder)
                if status.available:
                    self.choose("model", name, f"ImageNet-pretrained encoder {encoder} ({status.describe()})")
                    self.choose("model_kwargs", {}, "the model's defaults")
                    self.choose("pretrained", True, "pretrained encoders learn far more per minute on small data")
                    return self._spec()
        why = "no ImageNet weights found here (see `segkit weights`); trained from scratch"
        name = self.choose("model", SCRATCH_MODEL, why if not config.is_set("pretrained") else "from scratch, as asked")
        if name == SCRATCH_MODEL and not config.is_set("model_kwargs"):
            self.widths = list(SCRATCH_WIDTHS[self.kind])  # chosen in recipe(), by measured speed
            self.choose("model_kwargs", {"base_channels": self.widths[0]}, "")
        else:
            self.choose("model_kwargs", {}, "the model's defaults")
        self.choose("pretrained", False, "no weights to start from")
        return self._spec()

    def _spec(self) -> ModelSpec:
        kwargs = dict(self.value("model_kwargs"))
        if self.config.encoder:
            kwargs["encoder"] = self.config.encoder
        return ModelSpec(self.value("model"), 1, 3, kwargs)

    def value(self, option: str) -> Any:
        return next(choice.value for choice in self.choices if choice.option == option)

    def object_scale(self) -> tuple[float, str]:
        """The smallest resize factor that keeps every class's thin objects :data:`MIN_OBJECT_PIXELS` thick."""
        fp = self.fingerprint
        limits = [
            (MIN_OBJECT_PIXELS / width, name, width)
            for name, share, width in zip(fp.classes, fp.pixel_share, fp.width)
            if width is not None and share >= MIN_CLASS_SHARE
        ]
        if not limits:
            return MIN_SCALE, "no objects measured"
        scale, name, width = max(limits)
        if scale < 1.0:
            return max(MIN_SCALE, scale), f"{name}, the thinnest class, is {width:.0f}px wide"
        return 1.0, f"{name} is as thin as {width:.1f}px"

    def precision(self, spec: ModelSpec, size: tuple[int, int], batch: int) -> str:
        if self.device.type == "cuda" and not self.config.is_set("precision"):
            value = "bf16" if bf16_supported(self.device) else "16-mixed"
            self._measure(spec, size, batch, value)
            return self.choose("precision", value, f"{value} autocast on {torch.cuda.get_device_name(self.device)}")
        if self.config.is_set("precision"):
            self._measure(spec, size, batch, self.config.precision)
            return self.choose("precision", self.config.precision, "")
        if self.device.type != "cpu" or not bf16_supported(self.device):
            self._measure(spec, size, batch, "32")
            return self.choose("precision", "32", "no native bfloat16 here")
        fp32 = self._measure(spec, size, batch, "32")
        bf16 = self._measure(spec, size, batch, "bf16")
        speedup = bf16.images_per_second / fp32.images_per_second
        if speedup >= BF16_MIN_SPEEDUP:
            return self.choose("precision", "bf16", f"bfloat16 autocast trains {speedup:.1f}x faster on this CPU")
        return self.choose("precision", "32", f"bfloat16 only {speedup:.2f}x faster here")

    def _measure(self, spec: ModelSpec, size: tuple[int, int], batch: int, precision: str) -> Measurement:
        measurement = measure_training(spec, size, batch, precision, self.device)
        self.measurements.append(measurement)
        return measurement

    def throughput(self) -> Measurement:
        """The latest measurement in the chosen precision."""
        precision = self.value("precision")
        return next(m for m in reversed(self.measurements) if m.precision == precision)

    def batch_size(self, spec: ModelSpec, size: tuple[int, int], record: bool = True) -> int:
        """Images per step: a fixed pixel count on a CPU, what fits the memory on a GPU."""
        pixels = size[0] * size[1]
        if self.device.type != "cuda":
            batch = int(min(16, max(2, round(BATCH_PIXELS / pixels))))
            reason = f"{batch} x {size[1]}x{size[0]}: the batch barely changes CPU speed, so more steps"
        else:
            probe = measure_training(spec, size, 4, "bf16" if bf16_supported(self.device) else "16-mixed", self.device)
            total = torch.cuda.get_device_properties(self.device).total_memory
            per_image = max(probe.peak_memory_bytes / 4, 1)
            fits = GPU_MEMORY_SHARE * total / per_image
            steps_bound = max(2, self.fingerprint.num_images // MIN_STEPS_PER_EPOCH)  # a batch is not the whole set
            batch = int(2 ** math.floor(math.log2(max(2, min(32, fits, steps_bound)))))
            reason = (
                f"fits {GPU_MEMORY_SHARE:.0%} of the GPU's memory"
                if batch * MIN_STEPS_PER_EPOCH <= self.fingerprint.num_images
                else f"{MIN_STEPS_PER_EPOCH} steps per epoch over {self.fingerprint.num_images} images"
            )
        return self.choose("batch_size", batch, reason) if record else batch

    def input_size(self, scale: float) -> tuple[str, tuple[int, int]]:
        """Resize policy and input size at ``scale``: whole images when they fit, else crops."""
        fp = self.fingerprint
        if max(fp.max_size) * scale <= WHOLE_IMAGE_LIMIT[self.kind]:
            height, width = fp.median_size
            return "letterbox", _round_size(height * scale, width * scale)
        return "crop", (CROP_SIZE[self.kind],) * 2

    def epochs_at(self, measurement: Measurement, size: tuple[int, int]) -> float:
        """Epochs the budget allows at ``size`` (images per second scale with the input's pixels)."""
        rate = measurement.images_per_second * measurement.size[0] * measurement.size[1] / (size[0] * size[1])
        return TRAIN_SHARE * (self.seconds_left or 0.0) * rate / max(self.fingerprint.num_images, 1)

    def recipe(self) -> None:
        """Resize policy, input size, batch, precision, model width and the expected epochs.

        Whole images are shrunk when the budget gives fewer than :data:`MIN_EPOCHS` epochs (never
        below the thinnest class's limit); if the budget is still short, a narrower network.
        Crops stay at native resolution: their epochs do not depend on the image size.
        """
        fp, config = self.fingerprint, self.config
        spec = self.model()
        min_scale, object_reason = self.object_scale()
        scale = config.preprocess.scale if config.is_set("preprocess.scale") else 1.0
        policy, size = self.input_size(scale)
        if config.is_set("preprocess.resize"):
            policy = config.preprocess.resize
        if config.is_set("preprocess.img_size"):
            size = config.preprocess.img_size
        batch = config.batch_size if config.is_set("batch_size") else self.batch_size(spec, size, record=False)
        precision = self.precision(spec, size, batch)
        measured = self.throughput()
        size_reason = object_reason + ": native resolution"
        budget = self.seconds_left is not None
        if budget and policy == "letterbox" and not config.is_set("preprocess.img_size"):
            epochs = self.epochs_at(measured, size)
            if epochs < MIN_EPOCHS and min_scale < 1.0:
                shrink = max(math.sqrt(epochs / MIN_EPOCHS), min_scale, MIN_SCALE)
                _, size = self.input_size(shrink)
                size_reason = (
                    f"shrunk to {size[1]}x{size[0]} for {MIN_EPOCHS} epochs in the budget"
                    if shrink > min_scale
                    else f"{object_reason}: shrunk no further than {shrink:.2f}"
                )
        if self.widths:
            measured = self._choose_width(spec, size, batch, precision, measured)
        policy = self.choose(
            "preprocess.resize",
            policy,
            f"whole images fit {WHOLE_IMAGE_LIMIT[self.kind]}px"
            if policy == "letterbox"
            else f"images up to {max(fp.max_size)}px: random crops at native resolution, tiled prediction",
        )
        self.choose("preprocess.scale", scale, "native resolution" if policy == "crop" else "whole images")
        self.choose(
            "preprocess.img_size",
            tuple(size),
            f"crops of {size[1]}x{size[0]} px" if policy == "crop" else f"{size_reason}; sides multiples of {GRID}",
        )
        self.batch_size(spec, size)
        if budget:
            self.epochs = max(1, int(self.epochs_at(measured, size)))

    def _choose_width(
        self, spec: ModelSpec, size: tuple[int, int], batch: int, precision: str, measured: Measurement
    ) -> Measurement:
        """The widest scratch U-Net with about :data:`MIN_EPOCHS` epochs (else the narrowest) and its measurement."""
        tried = [(self.widths[0], measured, self.epochs_at(measured, size))]
        for width in self.widths[1:]:
            # narrower only when clearly short: measurements vary by a few per cent
            if tried[-1][2] >= NARROWER_BELOW * MIN_EPOCHS or self.seconds_left is None:
                break
            narrower = ModelSpec(
                spec.name, spec.out_channels, spec.in_channels, {**spec.kwargs, "base_channels": width}
            )
            measurement = self._measure(narrower, size, batch, precision)
            tried.append((width, measurement, self.epochs_at(measurement, size)))
        chosen, measurement, epochs = tried[-1]
        reason = (
            f"width {chosen}: {epochs:.0f} epochs fit the budget"
            if self.seconds_left is not None
            else f"width {chosen}"
        )
        if len(tried) > 1:
            reason += f" (width {tried[0][0]}: {tried[0][2]:.0f})"
        for choice in self.choices:
            if choice.option == "model_kwargs" and not choice.user:
                choice.value, choice.reason = {"base_channels": chosen}, reason
        return measurement

    def workers(self) -> None:
        """DataLoader workers: augmentation in parallel on a GPU machine; none where they compete for the CPU."""
        if self.device.type == "cuda":
            workers = max(0, min(8, (os.cpu_count() or 1) - 1))
            self.choose("num_workers", workers, f"{workers} processes augment while the GPU trains")
        else:
            self.choose("num_workers", 0, "the CPU trains: augmenting in other processes would slow it down")

    def optimisation(self) -> None:
        if self.value("pretrained"):
            self.choose("lr", 1e-3, "AdamW 1e-3 with cosine decay: fine-tuning a pretrained encoder")
        else:
            self.choose(
                "lr",
                3e-3,
                "AdamW 3e-3 with cosine decay: a network trained from scratch in a short "
                "budget learns faster at a higher peak (benchmarks: CrackForest)",
            )
        rare = self.fingerprint.rare_classes()
        if rare:
            self.choose("loss", "ce+dice", f"rare classes ({', '.join(rare)}): Dice weighs every class equally")
        else:
            self.choose("loss", "ce+dice", "cross-entropy for pixels plus Dice for region overlap")


def _registered(name: str) -> bool:
    from segkit.models.registry import list_models

    return name in list_models()


def _current(config: TrainConfig, option: str) -> Any:
    target: Any = config
    for part in option.split("."):
        target = getattr(target, part)
    return target


def _round_size(height: float, width: float) -> tuple[int, int]:
    """Sides rounded up to a multiple of :data:`~segkit.prediction.tiling.GRID` (at least one)."""
    return (max(GRID, int(math.ceil(height / GRID) * GRID)), max(GRID, int(math.ceil(width / GRID) * GRID)))


def make_plan(config: TrainConfig, data: Any, device: torch.device, elapsed: float = 0.0) -> Plan:
    """Plan a run: fingerprint ``data``'s training samples, probe ``device``, choose every option not set.

    Args:
        config: the options; ``config.is_set(name)`` tells which the user set.
        data: the run's :class:`~segkit.training.builders.TrainingData`.
        device: where training will run.
        elapsed: seconds of the budget already spent (opening the data).
    """
    start = time.monotonic()
    fingerprint = compute_fingerprint(
        data.train_source, data.train_indices, data.classes, config.preprocess.ignore_index
    )
    seconds_left = None
    if config.time_budget:
        seconds_left = max(config.time_budget - elapsed - (time.monotonic() - start), 1.0)
    planner = _Planner(config, fingerprint, device, seconds_left)
    planner.recipe()
    planner.workers()
    planner.optimisation()
    return Plan(
        planner.choices, fingerprint, str(device), planner.measurements, planner.epochs, time.monotonic() - start
    )


def plan_training(config: TrainConfig) -> Plan:
    """The plan ``segkit train`` would follow for ``config`` (``segkit plan``, ``--plan-only``)."""
    from segkit.device import resolve_device
    from segkit.training.builders import open_training_data

    return make_plan(config, open_training_data(config), resolve_device(config.device))
