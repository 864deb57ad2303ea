"""The planner: the training recipes worth trying on this data, this machine and this budget.

In the spirit of nnU-Net's experiment planner, but for a time budget rather than a GPU
memory target. From a :class:`~segkit.planning.fingerprint.Fingerprint` of the training
data and a few seconds of synthetic steps on the device (:mod:`segkit.planning.probe`) it
chooses, for every option the user did not set, a *leading* recipe by rules, and proposes
*candidates* that race against it at the start of training (:mod:`segkit.training.race`):
rules order and prune the candidates, the race on the user's data decides.

- **model**: an encoder pretrained on ImageNet whenever its weights can be had (found in
  the caches, or downloadable), since that is worth more than anything else on small
  datasets; otherwise segkit's plain U-Net, wider on a GPU, narrower on a CPU for one class
  against the background (:data:`ONE_CLASS_WIDTHS`). The other one races at the leader's input;
- **inputs**: whole images letterboxed on a ladder of sizes (:data:`LADDER`, from the median
  image up to :data:`WHOLE_IMAGE_LIMIT`; further down, :data:`SHORT_LADDER`, when a slow machine
  leaves a network from scratch fewer than :data:`MIN_EPOCHS` epochs on the ladder), random crops
  at native (and half) scale predicted window by window.
  The leader is the input with the most pixels that still allows :data:`MIN_EPOCHS` epochs
  without thinning any class (its fingerprint *width*) below :data:`MIN_OBJECT_PIXELS`; the
  others race (but those that would thin a class the leader keeps);
- **batch size** from the input size (and the GPU's memory), **precision** by measured
  speed (bf16 where the CPU or GPU has it), the **learning rate** (the leader at a lower one
  races too) and the **loss** (class weights where a rare class is one of several and the budget is
  short). Each challenger in the race changes one axis of the leader. The expected number of epochs is measured later, on the real path.

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
from segkit.config import TrainConfig
from segkit.files import atomic_write
from segkit.planning.fingerprint import Fingerprint, compute_fingerprint
from segkit.planning.probe import Measurement, bf16_supported, measure_training
from segkit.prediction.tiling import GRID

logger = logging.getLogger(__name__)

MIN_OBJECT_PIXELS = 1.5  # the rule-based plan keeps the thinnest class at least this wide after resizing
MIN_CLASS_SHARE = 0.001  # classes rarer than this do not constrain the resolution
MIN_EPOCHS = 25  # epochs (training inputs per training image) the rule-based plan wants the budget to allow
WHOLE_IMAGE_LIMIT = {"cpu": 512, "gpu": 1024}  # the largest whole-image input side
CROP_SIZE = {"cpu": 256, "gpu": 512}  # random crops (at native or half scale)
LADDER = (1.0, 0.7, 0.5)  # whole-image inputs: the largest, then these factors of its sides
# ... and further down when even the input with the most epochs gives under MIN_EPOCHS (the leader rule's own target),
# as long as every class it keeps MIN_OBJECT_PIXELS wide stays so: Dubai's 457 tiles of 512² on one fp32 thread
# in 5 minutes trained 2 epochs at 256² (held-out mIoU 0.34, 0.35; --no-plan 0.36) and ~10 at 128² (0.39, 0.41); the
# mixed set (cracks 1 px wide at 256² already) 3 epochs at 256² (0.31) and 9 at 128² (0.48); human_segmentation on
# two fp32 threads, U-Net 16, 8 epochs at 256² (0.73) and 23 at 128² (0.76). Not for a pretrained
# encoder, which learns in a few epochs what a network from scratch needs dozens for and loses more by shrunken
# images: human_segmentation on one fp32 thread, ImageNet MobileNetV2-UNet, 7 epochs at 256² 0.906, 21 at 128² 0.886
SHORT_LADDER = (0.35, 0.25)
MIN_INPUT_SIDE = 64  # no whole-image input shorter than this
BATCH_PIXELS = 8 * 256 * 256  # CPU: pixels per batch (throughput is flat in the batch size there)
GPU_MEMORY_SHARE = 0.6
# Batches (CPU and GPU) are capped so that an epoch still has this many optimiser steps: on a CPU a smaller batch
# costs little speed per image, and on few images it buys the steps (`segkit demo`'s 51 images on one fp32 thread:
# 0.932 at 16 per batch, 0.957 at 6; DRIVE's 16 without bf16: vessel F1 0.802 at 8, 0.812 at 2)
MIN_STEPS_PER_EPOCH = 8
BF16_MIN_SPEEDUP = 1.25
TRAIN_SHARE = 0.8  # of the remaining budget spent in training steps (the rest: validation, saving)
PRETRAINED_MODELS = {"cpu": ("mobilenetv2-unet", "unet-resnet34"), "gpu": ("unet-resnet34", "mobilenetv2-unet")}
# segkit's U-Net from scratch: its width, and the other width the race tries (on one class against the rest only).
# On a CPU one class leads with the narrower: it takes twice the steps in a budget and won every race it entered on
# such data; pinned without bf16 it beat width 16 on CrackForest (0.738 against 0.701–0.706) and human_segmentation.
SCRATCH_MODEL = "unet"
SCRATCH_WIDTHS = {"cpu": (16, 8), "gpu": (32, 16)}
ONE_CLASS_WIDTHS = {**SCRATCH_WIDTHS, "cpu": SCRATCH_WIDTHS["cpu"][::-1]}
# a leader expected to train fewer epochs than this (first guess) does not race: the losers' fifth of the budget
# would cost it more than a better pick gains (benchmarks: human_segmentation without bf16, 8 epochs guessed, 5 run)
RACE_MIN_EPOCHS = 10
PRETRAINED_LR, SCRATCH_LR = 1e-3, 3e-3
LR_ALTERNATIVE = 1 / 3  # the race's third candidate: the leader at this share of its learning rate


@dataclass(frozen=True)
class InputOption:
    """One way images reach the network: whole images letterboxed to ``size``, or random crops at ``scale``.

    ``scale`` is how much the median image shrinks (1: native resolution).
    """

    resize: str
    size: tuple[int, int]
    scale: float

    @property
    def label(self) -> str:
        if self.resize == "crop":
            where = "native scale" if self.scale == 1.0 else f"{self.scale:g}x scale"
            return f"{self.size[1]}px crops at {where}"
        return f"whole images {self.size[1]}x{self.size[0]}"

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]

    def choices(self) -> dict[str, Any]:
        return {
            "preprocess.resize": self.resize,
            "preprocess.img_size": self.size,
            "preprocess.scale": (self.scale if self.resize == "crop" else 1.0),
        }


@dataclass
class Candidate:
    """A recipe for the race: a label and the options that differ from the plan's leading recipe."""

    label: str
    choices: dict[str, Any]
    reason: str = ""
    steps_per_second: float | None = None  # first guess from the synthetic probe (None: not measured)
    expected_epochs: int | None = None  # after the race should it win, measured (``segkit plan``; None: not known)


@dataclass
class Choice:
    """One planned option: its dotted name, value, why, and whether the user set it instead."""

    option: str
    value: Any
    reason: str
    user: bool = False


@dataclass
class Plan:
    """The planner's output: the choices with their reasons, the race's candidates, the fingerprint, the measurements.

    ``choices`` describe the leading recipe (the rule-based plan); ``candidates`` are the recipes
    that race at the start of training, the leader first. After the race, :meth:`adopt` makes the
    winner's options the choices and keeps the race's record in ``race``.
    """

    choices: list[Choice]
    fingerprint: Fingerprint
    device: str
    measurements: list[Measurement] = field(default_factory=list)
    epochs: int | None = None
    seconds: float = 0.0
    candidates: list[Candidate] = field(default_factory=list)
    race: dict[str, Any] = field(default_factory=dict)
    no_race: str = ""  # why the candidates do not race although the budget would allow it ("": they race)
    left_out: str = ""  # inputs that were not made candidates, and why ("": none)
    # before training (``segkit plan``): how many candidates the budget lets race and the seconds planned for them
    planned_race: tuple[int, float] = (0, 0.0)

    def apply(self, config: TrainConfig, candidate: Candidate | None = None) -> TrainConfig:
        """``config`` with every planned (not user-set) choice filled in, or those of ``candidate``."""
        values = {choice.option: choice.value for choice in self.choices if not choice.user}
        if candidate is not None:
            values.update(candidate.choices)
        preprocess = {name.split(".", 1)[1]: value for name, value in values.items() if name.startswith("preprocess.")}
        top = {name: value for name, value in values.items() if "." not in name}
        return replace(config, **top, preprocess=replace(config.preprocess, **preprocess))

    def adopt(self, choices: dict[str, Any], race: dict[str, Any]) -> None:
        """Make the race winner's ``choices`` the plan's and keep the race's record."""
        self.race = race
        winner = race.get("entries", [{}])[race.get("winner", 0)] if race.get("raced") else {}
        for choice in self.choices:
            if choice.option in choices and not choice.user and choices[choice.option] != choice.value:
                choice.value = choices[choice.option]
                choice.reason = f"won the race ({winner.get('label', '')})"

    def revise_class_weights(self, epochs: float) -> Choice | None:
        """Decide the planned class weights again on the ``epochs`` measured on the real training path (the
        first guess they were planned on can be off by half): all the model will train, the measured slice or
        the race's included; the changed choice, or None when it stands."""
        choice = next((c for c in self.choices if c.option == "class_weights" and not c.user), None)
        if choice is None:
            return None
        value, reason = weights_rule(self.fingerprint, epochs, measured=True)
        if value == choice.value:
            return None
        choice.value, choice.reason = value, reason
        return choice

    def expect(self, epochs: int, racing: set[str]) -> None:
        """``epochs`` expected for the leading recipe (measured on the real path), and for every candidate that
        races (labels ``racing``) should it win: the leader's scaled by its first-guess speed (images per second)."""
        self.epochs = epochs
        batch = next((c.value for c in self.choices if c.option == "batch_size"), 1)

        def speed(candidate: Candidate) -> float:
            return (candidate.steps_per_second or 0.0) * candidate.choices.get("batch_size", batch)

        leader = speed(self.candidates[0]) if self.candidates else 0.0
        for candidate in self.candidates:
            if leader and speed(candidate) and candidate.label in racing:
                candidate.expected_epochs = max(1, round(epochs * speed(candidate) / leader))

    def format(self) -> str:
        """The printout: the data, then one line per choice with its reason, then the race's candidates."""
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
            racers, seconds = self.planned_race
            after = f" after a race of {racers} (~{seconds:.0f}s);" if racers > 1 else ""
            lines.append(
                f"  {'epochs':<14} ~{self.epochs:<21} expected in the time budget{after} measured on this data"
            )
        if self.no_race:
            lines.append(f"  race           none: {self.no_race}")
        elif len(self.candidates) > 1:
            lines.append("  race candidates (the budget decides how many race; the leader first):")
            for k, candidate in enumerate(self.candidates, 1):
                epochs = candidate.expected_epochs
                winning = f"; ~{epochs} epochs if it wins" if epochs is not None else ""
                lines.append(f"    {k}. {candidate.label}: {candidate.reason}{winning}")
        if self.left_out:
            lines.append(f"  not raced     {self.left_out}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        from segkit.files import to_json_safe

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
                "planned_race": {"candidates": self.planned_race[0], "seconds": round(self.planned_race[1], 1)},
                "candidates": [
                    {
                        "label": c.label,
                        "choices": _plain(c.choices),
                        "reason": c.reason,
                        "expected_epochs": c.expected_epochs,
                    }
                    for c in self.candidates
                ],
                "race": self.race,
                "no_race": self.no_race,
                "left_out": self.left_out,
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


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


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
        self.candidates: list[Candidate] = []
        self.alternative: dict[str, Any] = {}  # the other network the race tries: its options
        self.lr_place = 2  # where the leader at a lower learning rate races (after the one-axis challengers)
        self.no_race = ""
        self.leader_epochs: float | None = None  # the leader's epochs in the budget (first guess; None: no budget)
        self.left_out = ""  # inputs that do not race, and why

    def choose(self, option: str, value: Any, reason: str) -> Any:
        """Record a choice unless the user set the option; return the value in force."""
        if self.config.is_set(option):
            current = _current(self.config, option)
            self.choices.append(Choice(option, current, "", user=True))
            return current
        self.choices.append(Choice(option, value, reason))
        return value

    def value(self, option: str) -> Any:
        return next(choice.value for choice in self.choices if choice.option == option)

    # -------------------------------------------------------------- network
    def model(self) -> ModelSpec:
        """An ImageNet-pretrained encoder when its weights can be had, else segkit's U-Net; the other one races."""
        from segkit.models.weights import encoder_name, weights_status

        config = self.config
        width, other = (ONE_CLASS_WIDTHS if self.fingerprint.one_class else SCRATCH_WIDTHS)[self.kind]
        scratch = {"model": SCRATCH_MODEL, "model_kwargs": {"base_channels": width}, "pretrained": False}
        if not config.is_set("pretrained") or config.pretrained:
            candidates = [config.model] if config.is_set("model") else list(PRETRAINED_MODELS[self.kind])
            for name in candidates:
                kwargs = dict(config.model_kwargs) if config.is_set("model_kwargs") else {}
                encoder = encoder_name(name, kwargs) if _registered(name) else None
                if encoder is None:
                    continue
                status = weights_status(encoder)
                if status.available:
                    self.choose("model", name, f"ImageNet-pretrained encoder {encoder} ({status.describe()})")
                    self.choose("model_kwargs", {}, "the model's defaults")
                    self.choose("pretrained", True, "pretrained encoders learn far more per minute on small data")
                    self.alternative = {**scratch, "lr": SCRATCH_LR, "label": f"unet-{width} from scratch"}
                    return self._spec()
        why = "no ImageNet weights found here (see `segkit weights`); trained from scratch"
        name = self.choose("model", SCRATCH_MODEL, why if not config.is_set("pretrained") else "from scratch, as asked")
        if name == SCRATCH_MODEL and not config.is_set("model_kwargs"):
            # the narrower U-Net takes twice the steps, so it leads any short race; with several classes it then
            # ends lower (benchmarks: Dubai, 6 classes, Road never learnt): other widths race one class only
            self.choose(
                "model_kwargs",
                {"base_channels": width},
                f"width {width} for one class on a {self.kind.upper()}; width {other} races"
                if self.fingerprint.one_class
                else f"width {width}: {len(self.fingerprint.classes)} classes",
            )
            if self.fingerprint.one_class:
                self.alternative = {"model_kwargs": {"base_channels": other}, "label": f"unet-{other}"}
        else:
            self.choose("model_kwargs", {}, "the model's defaults")
        self.choose("pretrained", False, "no weights to start from")
        return self._spec()

    def _spec(self) -> ModelSpec:
        kwargs = dict(self.value("model_kwargs"))
        if self.config.encoder:
            kwargs["encoder"] = self.config.encoder
        return ModelSpec(self.value("model"), 1, 3, kwargs)

    def network_label(self) -> str:
        kwargs = self.value("model_kwargs")
        width = kwargs.get("base_channels") if isinstance(kwargs, dict) else None
        return f"{self.value('model')}-{width}" if width else str(self.value("model"))

    # -------------------------------------------------------------- inputs
    def inputs(self) -> list[InputOption]:
        """The ways images may reach the network: whole images on a ladder of sizes, random crops at native scale.

        Options the user set (``--img-size``, ``--resize``, ``--scale``) leave one way.
        """
        fp, config = self.fingerprint, self.config
        if any(config.is_set(f"preprocess.{name}") for name in ("img_size", "resize", "scale")):
            resize = config.preprocess.resize if config.is_set("preprocess.resize") else None
            if resize is None:
                resize = "crop" if config.is_set("preprocess.scale") else "letterbox"
            if config.is_set("preprocess.img_size"):
                size = config.preprocess.img_size
            else:
                size = (CROP_SIZE[self.kind], CROP_SIZE[self.kind]) if resize == "crop" else self._whole_size(1.0)
            scale = (
                config.preprocess.scale
                if resize == "crop"
                else min(size[0] / fp.median_size[0], size[1] / fp.median_size[1])
            )
            return [InputOption(resize, size, float(scale))]
        height, width = fp.median_size
        options = self._wholes(LADDER)
        crop = min(CROP_SIZE[self.kind], max(GRID, (min(height, width) // GRID) * GRID))
        for scale in (1.0, 0.5):
            if height * width * scale * scale >= 2 * crop * crop:
                options.append(InputOption("crop", (crop, crop), scale))
        return options

    def smaller_inputs(self, options: list[InputOption], measured: Measurement) -> list[InputOption]:
        """``options`` and, when even the one with the most epochs gives under :data:`MIN_EPOCHS`, whole
        images further down (:data:`SHORT_LADDER`) that keep every class :data:`MIN_OBJECT_PIXELS` wide that the
        one with the most epochs keeps (a class thinned there already does not hold the others back), as long as
        it keeps two classes or more. Never beside a pretrained encoder (:data:`SHORT_LADDER`)."""
        if len(options) == 1 or not self.seconds_left or self.value("pretrained"):
            return options
        most = max(options, key=lambda option: self.epochs_at(measured, option))
        if self.epochs_at(measured, most) >= MIN_EPOCHS:
            return options
        widths = self.class_widths(most)
        lost = frozenset(name for width, name in widths if width < MIN_OBJECT_PIXELS)
        if len(widths) - len(lost) < 2:  # one class left (background and a thin class): shrink no further
            lost = frozenset()
        return options + [o for o in self._wholes(SHORT_LADDER) if self.keeps_thin(o, lost) and o not in options]

    def _wholes(self, factors: tuple[float, ...]) -> list[InputOption]:
        """Whole images letterboxed to each of ``factors`` of the largest whole-image input (distinct sizes; none
        with a side under :data:`MIN_INPUT_SIDE` but the largest)."""
        height, width = self.fingerprint.median_size
        options: list[InputOption] = []
        for factor in factors:
            size = self._whole_size(factor)
            option = InputOption("letterbox", size, min(size[0] / height, size[1] / width, 1.0))
            if (min(size) >= MIN_INPUT_SIDE or factor == 1.0) and option not in options:
                options.append(option)
        return options

    def _whole_size(self, factor: float) -> tuple[int, int]:
        height, width = self.fingerprint.median_size
        fit = min(1.0, WHOLE_IMAGE_LIMIT[self.kind] / max(height, width)) * factor
        return _round_size(height * fit, width * fit)

    def class_widths(self, option: InputOption) -> list[tuple[float, str]]:
        """Each class's width at ``option``'s scale, with its name (classes of :data:`MIN_CLASS_SHARE` or more)."""
        fp = self.fingerprint
        return [
            (width * option.scale, name)
            for name, share, width in zip(fp.classes, fp.pixel_share, fp.width)
            if width is not None and share >= MIN_CLASS_SHARE
        ]

    def thinnest(self, option: InputOption) -> tuple[float | None, str]:
        """The width of the thinnest class (of at least :data:`MIN_CLASS_SHARE` of the pixels) at ``option``'s scale."""
        widths = self.class_widths(option)
        return min(widths) if widths else (None, "")

    def keeps_thin(self, option: InputOption, besides: frozenset[str] = frozenset()) -> bool:
        """Whether ``option`` keeps every class (of :data:`MIN_CLASS_SHARE`; but ``besides``) at least
        :data:`MIN_OBJECT_PIXELS` wide."""
        return all(width >= MIN_OBJECT_PIXELS for width, name in self.class_widths(option) if name not in besides)

    def epochs_at(self, measurement: Measurement, option: InputOption) -> float:
        """Epochs the budget allows at ``option`` (images per second scale with the input's pixels)."""
        rate = measurement.images_per_second * measurement.size[0] * measurement.size[1] / option.pixels
        return TRAIN_SHARE * (self.seconds_left or 0.0) * rate / max(self.fingerprint.num_images, 1)

    def leading_input(self, options: list[InputOption], measured: Measurement) -> tuple[InputOption, str]:
        """The rule-based choice: the most pixels that still give :data:`MIN_EPOCHS` epochs and keep thin classes.

        Without a budget: the largest whole image, or native crops when images exceed the whole-image limit.
        """
        if len(options) == 1:
            return options[0], "as you set"
        if self.seconds_left is None:
            crops = [o for o in options if o.resize == "crop" and o.scale == 1.0]
            if crops and max(self.fingerprint.max_size) > WHOLE_IMAGE_LIMIT[self.kind]:
                return crops[0], f"images up to {max(self.fingerprint.max_size)}px: native crops, tiled prediction"
            return options[0], "whole images, the largest input"

        epochs = {option: self.epochs_at(measured, option) for option in options}
        enough = [o for o in options if epochs[o] >= MIN_EPOCHS]
        good = [o for o in enough if self.keeps_thin(o)]
        if good:
            leader = max(good, key=lambda o: o.pixels)
            return leader, f"the most pixels with ~{epochs[leader]:.0f} epochs (first guess), thin classes kept"
        if enough:
            leader = max(enough, key=lambda o: ((self.thinnest(o)[0] or 0.0), o.pixels))
            width, name = self.thinnest(leader)
            return leader, f"~{epochs[leader]:.0f} epochs (first guess); {name} {width:.1f}px wide there"
        leader = max(options, key=lambda o: epochs[o])
        width, name = self.thinnest(leader)
        thinned = f"; {name} {width:.1f}px wide there" if width is not None and width < MIN_OBJECT_PIXELS else ""
        return leader, f"a short budget: the most epochs (first guess ~{epochs[leader]:.1f}){thinned}"

    # ------------------------------------------------------- speed, batch
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

    def batch_for(self, spec: ModelSpec, size: tuple[int, int]) -> tuple[int, str]:
        """Images per step: a fixed pixel count on a CPU, what fits the memory on a GPU, either capped so that an
        epoch keeps :data:`MIN_STEPS_PER_EPOCH` steps; and why."""
        if self.config.is_set("batch_size"):
            return self.config.batch_size, ""
        pixels = size[0] * size[1]
        images = self.fingerprint.num_images
        steps_bound = max(2, images // MIN_STEPS_PER_EPOCH)  # a batch is not the whole set
        few_images = (
            f"{MIN_STEPS_PER_EPOCH} steps per epoch over {images} images"
            if images >= 2 * MIN_STEPS_PER_EPOCH
            else f"the smallest batch: {images} images give fewer than {MIN_STEPS_PER_EPOCH} steps an epoch"
        )
        if self.device.type != "cuda":
            by_pixels = int(min(16, max(2, round(BATCH_PIXELS / pixels))))
            batch = min(by_pixels, steps_bound)
            why = few_images if batch < by_pixels else f"{batch} x {size[1]}x{size[0]}"
            return batch, f"{why}: the batch barely changes CPU speed, so more steps"
        probe = measure_training(spec, size, 4, "bf16" if bf16_supported(self.device) else "16-mixed", self.device)
        total = torch.cuda.get_device_properties(self.device).total_memory
        per_image = max(probe.peak_memory_bytes / 4, 1)
        fits = GPU_MEMORY_SHARE * total / per_image
        batch = int(2 ** math.floor(math.log2(max(2, min(32, fits, steps_bound)))))
        reason = (
            f"fits {GPU_MEMORY_SHARE:.0%} of the GPU's memory" if batch * MIN_STEPS_PER_EPOCH <= images else few_images
        )
        return batch, reason

    # ------------------------------------------------------------ the recipe
    def recipe(self) -> None:
        """Input policy and size, batch, precision and expected epochs of the leader; the race's candidates."""
        spec = self.model()
        options = self.inputs()
        reference = options[0]
        batch, _ = self.batch_for(spec, reference.size)
        self.precision(spec, reference.size, batch)
        measured = self.throughput()
        options = self.smaller_inputs(options, measured)
        leader, reason = self.leading_input(options, measured)
        fp = self.fingerprint
        self.choose(
            "preprocess.resize",
            leader.resize,
            "whole images, letterboxed" if leader.resize == "letterbox" else f"images up to {max(fp.max_size)}px",
        )
        self.choose(
            "preprocess.scale",
            leader.choices()["preprocess.scale"],
            "the scale of the crops" if leader.resize == "crop" else "whole images: no crop scale",
        )
        self.choose("preprocess.img_size", leader.size, f"{reason}; sides multiples of {GRID}")
        batch, batch_reason = self.batch_for(spec, leader.size)
        self.choose("batch_size", batch, batch_reason)
        self.leader_epochs = self.epochs_at(measured, leader) if self.seconds_left else None
        if self.leader_epochs is not None and self.leader_epochs < RACE_MIN_EPOCHS:
            self.no_race = (
                f"~{self.leader_epochs:.0f} epochs (first guess) are too few to give a fifth of them to a race"
            )
        self.race_candidates(options, leader, measured, spec)

    def race_candidates(
        self, options: list[InputOption], leader: InputOption, measured: Measurement, spec: ModelSpec
    ) -> None:
        """The leader, then challengers that each change one axis of it.

        When the leader shrinks the images, native crops (the input axis) challenge it second:
        a short race favours whatever learns the coarse layout fastest, so crops that lead
        early are a strong signal, and they keep every thin structure. Otherwise the other
        network at the leader's input comes second from scratch (:meth:`other_network`,
        fourth beside a pretrained encoder); the leader at a lower learning rate comes third
        (:meth:`optimisation`); then the other inputs, nearest in pixels first. When the leader keeps
        the thin classes (:meth:`keeps_thin`), inputs that thin them below :data:`MIN_OBJECT_PIXELS`
        do not race: shrunken images learn the coarse layout first and lead a short race, then end
        lower (benchmarks: DRIVE, whole 256² images with vessels 0.7 px wide won over native crops and
        ended at vessel F1 0.78–0.79 where the crops reach 0.80–0.81).
        """
        network = self.network_label()
        shrinks = leader.resize == "letterbox" and leader.scale < 1.0

        def order(option: InputOption) -> tuple[bool, float]:
            native_crop = option.resize == "crop" and option.scale == 1.0
            return (not (shrinks and native_crop), abs(math.log(option.pixels / leader.pixels)))

        def epochs_text(option: InputOption) -> str:
            return f"first guess ~{self.epochs_at(measured, option):.0f} epochs" if self.seconds_left else ""

        def steps_per_second(option: InputOption, batch: int) -> float:
            return measured.images_per_second * measured.size[0] * measured.size[1] / option.pixels / batch

        batch = self.value("batch_size")
        if self.keeps_thin(leader):  # the leader keeps the thin classes: inputs that thin them do not race
            thinning = [o for o in options if not self.keeps_thin(o)]
            if thinning:
                name = self.thinnest(thinning[0])[1]  # widths scale alike: one class is the thinnest at every scale
                self.left_out = (
                    f"{', '.join(o.label for o in thinning)}: {name} under {MIN_OBJECT_PIXELS:g}px wide there "
                    "(the leader keeps it; a short race favours shrunken images that then end lower)"
                )
                options = [o for o in options if o not in thinning]
        self.candidates = [
            Candidate(
                f"{network}, {leader.label}",
                {},
                f"the rule-based plan; {epochs_text(leader)}",
                steps_per_second(leader, batch),
            )
        ]
        for option in sorted((o for o in options if o != leader), key=order):
            choices = option.choices()
            batch, _ = self.batch_for(spec, option.size)
            if not self.config.is_set("batch_size"):
                choices["batch_size"] = batch
            width, name = self.thinnest(option)
            thin = f"; {name} {width:.1f}px wide" if width is not None and width < 4 else ""
            self.candidates.append(
                Candidate(
                    f"{network}, {option.label}",
                    choices,
                    f"{epochs_text(option)}{thin}",
                    steps_per_second(option, batch),
                )
            )
        network_set = any(self.config.is_set(name) for name in ("model", "model_kwargs", "pretrained", "encoder"))
        # without a race the other network is not timed: on one slow thread its probe took 12 s of a 5-minute budget
        if self.alternative and not network_set and not self.no_race:
            place = 3 if self.value("pretrained") else (2 if shrinks and len(self.candidates) > 1 else 1)
            self.candidates.insert(place, self.other_network(leader))
            self.lr_place = 3 if place == 2 else 2

    def other_network(self, leader: InputOption) -> Candidate:
        """The other network at the leader's input and batch (one axis changed), with its own measured speed.

        From scratch the U-Net's other width (:data:`ONE_CLASS_WIDTHS`: on a CPU the wider beside
        the narrower leader, on a GPU the narrower); beside a pretrained encoder, segkit's U-Net
        from scratch.
        """
        alternative = {k: v for k, v in self.alternative.items() if k != "label"}
        other = ModelSpec(
            str(alternative.get("model", self.value("model"))),
            1,
            3,
            dict(alternative.get("model_kwargs", self.value("model_kwargs"))),
        )
        batch = self.value("batch_size")
        measured = self._measure(other, leader.size, batch, self.value("precision"))
        return Candidate(
            f"{self.alternative['label']}, {leader.label}",
            alternative,
            f"the other network at the leader's input ({self.epochs_at(measured, leader):.0f} epochs first guess)"
            if self.seconds_left
            else "the other network at the leader's input",
            measured.images_per_second * measured.size[0] * measured.size[1] / leader.pixels / batch,
        )

    def workers(self) -> None:
        """DataLoader workers: augmentation in parallel on a GPU machine; none where they compete for the CPU."""
        if self.device.type == "cuda":
            workers = max(0, min(8, (os.cpu_count() or 1) - 1))
            self.choose("num_workers", workers, f"{workers} processes augment while the GPU trains")
        else:
            self.choose("num_workers", 0, "the CPU trains: augmenting in other processes would slow it down")

    def optimisation(self) -> None:
        if self.value("pretrained"):
            self.choose("lr", PRETRAINED_LR, "AdamW 1e-3 with cosine decay: fine-tuning a pretrained encoder")
        else:
            self.choose(
                "lr",
                SCRATCH_LR,
                "AdamW 3e-3 with cosine decay: a network trained from scratch in a short "
                "budget learns faster at a higher peak (benchmarks: CrackForest)",
            )
        rare = self.fingerprint.rare_classes()
        if rare:
            self.choose("loss", "ce+dice", f"rare classes ({', '.join(rare)}): Dice weighs every class equally")
        else:
            self.choose("loss", "ce+dice", "cross-entropy for pixels plus Dice for region overlap")
        self.choose("class_weights", *weights_rule(self.fingerprint, self.leader_epochs))
        if not self.config.is_set("lr") and self.candidates:
            lower = self.value("lr") * LR_ALTERNATIVE
            self.candidates.insert(
                min(self.lr_place, len(self.candidates)),
                Candidate(
                    f"{self.candidates[0].label}, lr {lower:g}",
                    {"lr": lower},
                    "the leader at a lower peak",
                    self.candidates[0].steps_per_second,
                ),
            )


def weights_rule(fingerprint: Fingerprint, epochs: float | None, measured: bool = False) -> tuple[str | None, str]:
    """The planned ``class_weights`` and why: ``auto`` where a class under 1 % of the pixels is one of several and
    the run is expected to train fewer than :data:`MIN_EPOCHS` epochs (``measured`` on the real path, or a first
    guess), else None.

    Not on one class against the rest (on one class against the background they make the network over-predict
    it: CrackForest crack IoU 0.435 against 0.521); in short runs unweighted networks do not predict the rare
    classes at all (the mixed set, 3 epochs: mIoU 0.31 against 0.37 weighted; 9 epochs: cracks 0 against 0.18);
    in longer runs the weights cost the common classes more than they give (Dubai, 30 epochs: 0.507 against 0.488).
    """
    rare = fingerprint.rare_classes()
    if not rare:
        return None, "none: no class under 1 % of the pixels"
    if fingerprint.one_class:
        return None, "none: on one class against the background they over-predict it"
    how = "measured" if measured else "first guess"
    if epochs is not None and epochs < MIN_EPOCHS:
        return "auto", (
            f"inverse median frequency: {', '.join(rare)} under 1 % of the pixels, and ~{epochs:.0f} epochs ({how}) "
            "are too few to learn them unweighted"
        )
    expected = f" (~{epochs:.0f} epochs, {how})" if epochs is not None else ""
    return None, f"none: enough epochs to learn the rare classes unweighted{expected}"


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
        planner.choices,
        fingerprint,
        str(device),
        planner.measurements,
        None,  # measured on the real training path: the race, or plan_training's slice
        time.monotonic() - start,
        planner.candidates,
        no_race=planner.no_race,
        left_out=planner.left_out,
    )
