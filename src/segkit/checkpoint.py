"""The model card and the checkpoint file: what travels with a model's weights, owned here only.

A :class:`ModelCard` (like timm's ``PretrainedCfg`` or torchvision's ``Weights.meta``)
holds everything needed to use the weights: the architecture (:class:`ModelSpec`), the
class names and colours, binary mode and threshold, the ignore value, which class (if
any) is the background, the preprocessing, and a summary of the training. The trainer
writes it, and every consumer reads it: prediction, ONNX export (its metadata), the
server, the tests and the benchmarks. ``to_dict``/``from_dict`` give plain built-in types,
so a checkpoint loads with ``torch.load(path, weights_only=True)``.

A checkpoint file (``.pt``) is ``{"format": "segkit-checkpoint", "version": 2,
"card": {...}, "state_dict": {...}}`` plus, in ``last.pt``, a ``"resume"`` entry with what
continuing the run needs (optimiser, schedule, scaler, random state, EMA weights ...).
Version 1 files (the card's fields at the top level) still load.

This module imports no PyTorch at import time: the ONNX-only install reads cards too.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.data.classes import background_index
from segkit.data.transforms import PreprocessConfig
from segkit.errors import SegkitError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

CHECKPOINT_FORMAT = "segkit-checkpoint"
CHECKPOINT_VERSION = 2
# Sanity bounds checked before anything is allocated: a card that asks for more is refused.
# A Hugging-Face-style model folder (segkit export --format hf): the card and the weights.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

MAX_PARAMETERS = 2_000_000_000
MAX_CLASSES = 255  # class indices are stored in uint8 masks beside the ignore value
MAX_INPUT_SIDE = 16384
MAX_ARCHIVE_ENTRIES = 100_000  # tensors in one checkpoint file (weights, optimiser and EMA states)
# A network input may have at most this many pixels (4096 x 4096): larger images are predicted window by
# window. Real cards ask for 256² to 2048²; 16384² (268 megapixels) would need hundreds of GiB per pass.
MAX_INPUT_PIXELS = 4096 * 4096
# Forward-pass memory estimate: the largest activation at PROBE_SIDE² (meta device) times this factor.
PROBE_SIDE = 128
ACTIVATION_FACTOR = 6


def _fail(source: str | Path | None, problem: str) -> SegkitError:
    return SegkitError(source, f"bad model card: {problem}")


def _int(value: Any, name: str, low: int, high: int, source: str | Path | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(source, f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True)
class ModelSpec:
    """The architecture: rebuilt with ``create_model(name, out_channels, in_channels, **kwargs)``.

    Attributes:
        name: registry name (``segkit models``).
        out_channels: network output channels: the number of classes, or 1 in binary mode.
        in_channels: input image channels.
        kwargs: the model's options (plain values; never ``pretrained``: loading a
            checkpoint must not download anything).
    """

    name: str
    out_channels: int
    in_channels: int = 3
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "out_channels": self.out_channels,
            "in_channels": self.in_channels,
            "kwargs": dict(self.kwargs),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> ModelSpec:
        if not isinstance(data, dict):
            raise _fail(source, f"model must be a mapping, got {type(data).__name__}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise _fail(source, f"model name must be a string, got {name!r}")
        outputs = data.get("out_channels", data.get("num_classes"))  # version 1 called it num_classes
        kwargs = data.get("kwargs", {})
        if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
            raise _fail(source, f"model kwargs must be a mapping of names, got {kwargs!r}")
        return cls(
            name=name,
            out_channels=_int(outputs, "model out_channels", 1, MAX_CLASSES, source),
            in_channels=_int(data.get("in_channels", 3), "model in_channels", 1, 64, source),
            kwargs=dict(kwargs),
        )

    def build(self, source: str | Path | None = None, **extra: Any) -> nn.Module:
        """The model, after checking on the meta device that it is of a sane size.

        Args:
            source: the file the card came from (named in errors).
            **extra: builder options not stored in the card (``pretrained=True`` in training).

        Raises:
            SegkitError: unknown model or option, or more than :data:`MAX_PARAMETERS` parameters.
        """
        import torch

        from segkit.models import create_model

        def make() -> nn.Module:
            return create_model(self.name, self.out_channels, self.in_channels, **self.kwargs, **extra)

        try:
            with torch.device("meta"):
                parameters = sum(parameter.numel() for parameter in make().parameters())
        except SegkitError as error:
            raise SegkitError(source, error.problem) from None
        except Exception as error:  # a builder given absurd options may fail anywhere
            raise SegkitError(source, f"cannot build model {self.name!r} from {self.kwargs}: {error}") from None
        if parameters > MAX_PARAMETERS:
            raise _fail(
                source,
                f"model {self.name!r} with {self.kwargs} would have {parameters:,} parameters "
                f"(more than {MAX_PARAMETERS:,})",
            )
        return make()

    def forward_bytes(self, height: int, width: int, batch: int = 1) -> int | None:
        """Estimated memory of one inference pass on ``batch`` inputs of ``height x width``, allocating nothing.

        A forward pass on PyTorch's meta device at :data:`PROBE_SIDE` pixels records the largest
        activation; a pass at ``height x width`` holds about :data:`ACTIVATION_FACTOR` times that
        (its input, the skip connections and the output live beside it), scaled by the pixels.
        ``None`` when the model cannot run on the meta device (then nothing is refused by it).
        """
        try:
            import torch

            from segkit.models import create_model
        except ImportError:  # the ONNX-only install: no estimate
            return None
        largest = 0

        def record(module: Any, inputs: Any, output: Any) -> None:
            nonlocal largest
            for item in output if isinstance(output, (list, tuple)) else [output]:
                if isinstance(item, torch.Tensor):
                    largest = max(largest, item.numel() * item.element_size())

        try:
            with torch.device("meta"):
                model = create_model(self.name, self.out_channels, self.in_channels, **self.kwargs).eval()
                for module in model.modules():
                    if not any(True for _ in module.children()):
                        module.register_forward_hook(record)
                with torch.no_grad():
                    model(torch.empty(1, self.in_channels, PROBE_SIDE, PROBE_SIDE))
        except Exception:  # an operation without a meta kernel: no estimate
            return None
        return int(ACTIVATION_FACTOR * largest * height * width * batch / (PROBE_SIDE * PROBE_SIDE))


@dataclass
class TrainingSummary:
    """How the weights were trained (empty for models that were not trained by segkit).

    Attributes:
        epoch: epochs trained.
        best_epoch: the epoch whose weights a ``best.pt`` holds.
        best_metric: its validation mIoU.
        metrics: its validation metrics.
        history: one row per epoch (as ``history.csv``).
        config: every training option.
        plan: the planner's choices and reasons (``plan.json``).
        seconds: training wall time.
        weights: ``"raw"`` or ``"ema"`` (exponential moving average of the weights).
        data: the training data folder and image counts.
    """

    epoch: int = 0
    best_epoch: int = 0
    best_metric: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    weights: str = "raw"
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from segkit.files import to_json_safe

        return to_json_safe(
            {
                "epoch": self.epoch,
                "best_epoch": self.best_epoch,
                "best_metric": self.best_metric,
                "metrics": self.metrics,
                "history": self.history,
                "config": self.config,
                "plan": self.plan,
                "seconds": self.seconds,
                "weights": self.weights,
                "data": self.data,
            }
        )

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> TrainingSummary:
        if not isinstance(data, dict):
            raise _fail(source, f"training must be a mapping, got {type(data).__name__}")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        try:
            summary = cls(**known)
            summary.epoch, summary.best_epoch = int(summary.epoch), int(summary.best_epoch)
            summary.seconds = float(summary.seconds)
        except (TypeError, ValueError) as error:
            raise _fail(source, f"training summary: {error}") from None
        for name in ("metrics", "config", "plan", "data"):
            if not isinstance(getattr(summary, name), dict):
                raise _fail(source, f"training {name} must be a mapping")
        if not isinstance(summary.history, list):
            raise _fail(source, "training history must be a list")
        return summary


@dataclass
class ModelCard:
    """Everything that travels with a model's weights.

    Attributes:
        model: the architecture.
        classes: class names in index order.
        palette: one RGB colour per class (the dataset's own colours when it has a colour
            table, else :func:`segkit.data.classes.default_palette`).
        preprocess: resize policy, input size, normalisation, augmentation of training.
        binary: one sigmoid channel thresholded at ``threshold`` (else softmax argmax).
        threshold: foreground probability threshold of binary mode.
        ignore_index: the mask value left out of loss and metrics.
        background: index of the class named as background, or ``None``.
        training: how the weights were trained.
        segkit_version: the segkit that wrote the card.
    """

    model: ModelSpec
    classes: list[str]
    palette: list[list[int]]
    preprocess: PreprocessConfig
    binary: bool = False
    threshold: float = 0.5
    ignore_index: int = 255
    background: int | None = None
    training: TrainingSummary = field(default_factory=TrainingSummary)
    segkit_version: str = ""

    def __post_init__(self) -> None:
        if not self.segkit_version:
            from segkit.version import __version__

            self.segkit_version = __version__

    @classmethod
    def create(
        cls,
        model: str,
        classes: list[str],
        preprocess: PreprocessConfig,
        *,
        binary: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        palette: Any = None,
        threshold: float = 0.5,
        ignore_index: int = 255,
        in_channels: int = 3,
    ) -> ModelCard:
        """A card for a new model: output channels, background and default colours derived from the classes."""
        from segkit.data.classes import default_palette

        colours = default_palette(classes) if palette is None else palette
        return cls(
            model=ModelSpec(model, 1 if binary else len(classes), in_channels, dict(model_kwargs or {})),
            classes=list(classes),
            palette=[[int(v) for v in colour] for colour in list(colours)[: len(classes)]],
            preprocess=preprocess,
            binary=binary,
            threshold=float(threshold),
            ignore_index=int(ignore_index),
            background=background_index(classes),
        )

    @property
    def num_classes(self) -> int:
        """Number of classes (2 in binary mode, whose network has one output channel)."""
        return len(self.classes)

    def palette_array(self) -> np.ndarray:
        """``(256, 3)`` uint8 colour of every mask value: the classes' colours, then the VOC palette (255 white)."""
        import numpy as np

        from segkit.visualize import PALETTE

        table = PALETTE.copy()
        table[: len(self.palette)] = np.asarray(self.palette, dtype=np.uint8).reshape(-1, 3)
        return table

    def to_dict(self) -> dict[str, Any]:
        """Built-in types only (JSON, ONNX metadata, ``weights_only`` checkpoints)."""
        return {
            "model": self.model.to_dict(),
            "classes": list(self.classes),
            "palette": [list(colour) for colour in self.palette],
            "preprocess": self.preprocess.to_dict(),
            "binary": self.binary,
            "threshold": self.threshold,
            "ignore_index": self.ignore_index,
            "background": self.background,
            "training": self.training.to_dict(),
            "segkit_version": self.segkit_version,
        }

    def batch_that_fits(
        self, height: int, width: int, batch: int, budget: int | None, source: str | Path | None = None
    ) -> int:
        """The largest batch, up to ``batch``, whose forward pass on ``height x width`` inputs fits ``budget`` bytes.

        Raises:
            SegkitError: not even one input fits: names ``preprocess.img_size``, the need and the budget.
        """
        one = self.model.forward_bytes(height, width, 1) if budget is not None else None
        if one is None or budget is None:
            return batch
        if one > budget:
            raise _fail(
                source,
                f"preprocess.img_size {list(self.preprocess.img_size)}: one forward pass of {height}x{width} pixels "
                f"through {self.model.name} needs about {one / 2**30:.1f} GiB, more than the "
                f"{budget / 2**30:.1f} GiB this machine can give it",
            )
        return max(1, min(batch, budget // max(one, 1)))

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> ModelCard:
        """Read and check a card; every malformed field is one :class:`SegkitError` naming ``source``."""
        if not isinstance(data, dict):
            raise _fail(source, f"expected a mapping, got {type(data).__name__}")
        for key in ("model", "classes", "preprocess"):
            if key not in data:
                raise _fail(source, f"no {key!r} entry")
        model = ModelSpec.from_dict(data["model"], source)
        classes = data["classes"]
        if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
            raise _fail(source, "classes must be a list of names")
        if not 2 <= len(classes) <= MAX_CLASSES or len(set(classes)) != len(classes):
            raise _fail(source, f"classes must be 2 to {MAX_CLASSES} distinct names, got {len(classes)}")
        binary = data.get("binary", False)
        if not isinstance(binary, bool):
            raise _fail(source, f"binary must be true or false, got {binary!r}")
        expected = 1 if binary else len(classes)
        if model.out_channels != expected:
            raise _fail(
                source,
                f"model has {model.out_channels} output channels but {len(classes)} classes in "
                f"{'binary' if binary else 'multi-class'} mode need {expected}",
            )
        threshold = data.get("threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise _fail(source, f"threshold must be a number in [0, 1], got {threshold!r}")
        ignore_index = _int(data.get("ignore_index", 255), "ignore_index", 0, 255, source)
        if not isinstance(data["preprocess"], dict):
            raise _fail(source, "preprocess must be a mapping")
        try:
            preprocess = PreprocessConfig.from_dict(dict(data["preprocess"]))
        except (SegkitError, TypeError) as error:
            raise _fail(source, f"preprocess: {getattr(error, 'problem', error)}") from None
        if max(preprocess.img_size) > MAX_INPUT_SIDE:
            raise _fail(source, f"input size {list(preprocess.img_size)} exceeds {MAX_INPUT_SIDE} pixels")
        height, width = preprocess.img_size
        if height * width > MAX_INPUT_PIXELS:
            raise _fail(
                source,
                f"preprocess.img_size {height}x{width} is {height * width / 1e6:.0f} megapixels, more than the "
                f"{MAX_INPUT_PIXELS / 1e6:.1f} (4096 x 4096) a network input may have",
            )
        palette = data.get("palette")
        if palette is None or (isinstance(palette, list) and not palette):
            from segkit.data.classes import default_palette

            palette = default_palette(classes).tolist()
        if (
            not isinstance(palette, list)
            or len(palette) < len(classes)
            or not all(
                isinstance(colour, (list, tuple))
                and len(colour) == 3
                and all(not isinstance(v, bool) and isinstance(v, int) and 0 <= v <= 255 for v in colour)
                for colour in palette
            )
        ):
            raise _fail(source, f"palette must hold an [r, g, b] colour (0-255) for each of the {len(classes)} classes")
        background = data.get("background", background_index(classes))
        if background is not None:
            background = _int(background, "background", 0, len(classes) - 1, source)
        training = TrainingSummary.from_dict(data.get("training", {}), source)
        version = data.get("segkit_version", "")
        return cls(
            model=model,
            classes=list(classes),
            palette=[list(colour) for colour in palette[: len(classes)]],
            preprocess=preprocess,
            binary=binary,
            threshold=float(threshold),
            ignore_index=ignore_index,
            background=background,
            training=training,
            segkit_version=str(version),
        )


@dataclass
class Checkpoint:
    """A checkpoint file's content.

    Attributes:
        card: the model card.
        state_dict: the weights.
        resume: ``last.pt`` only: optimiser, schedule, scaler, random state, EMA weights,
            early-stopping counter ... everything ``--resume`` needs (``None`` otherwise).
    """

    card: ModelCard
    state_dict: dict[str, torch.Tensor]
    resume: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "card": self.card.to_dict(),
            "state_dict": self.state_dict,
        }
        if self.resume is not None:
            state["resume"] = self.resume
        return state

    @classmethod
    def from_dict(cls, state: Any, source: str | Path | None = None) -> Checkpoint:
        """Check a loaded checkpoint dict (version 1 or 2) and read its card."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise SegkitError(source, f"not a segkit checkpoint (no 'format: {CHECKPOINT_FORMAT}' entry)")
        version = state.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SegkitError(source, f"not a segkit checkpoint (version {version!r})")
        if version > CHECKPOINT_VERSION:
            raise SegkitError(source, f"checkpoint version {version} is newer than this segkit; upgrade segkit")
        if version == 1:
            state = _upgrade_v1(state)
        weights = state.get("state_dict")
        if not isinstance(weights, dict):
            raise SegkitError(source, "checkpoint has no 'state_dict' entry")
        resume = state.get("resume")
        if resume is not None and not isinstance(resume, dict):
            raise SegkitError(source, "bad checkpoint: 'resume' must be a mapping")
        return cls(ModelCard.from_dict(state.get("card"), source), weights, resume)

    def build_model(self, source: str | Path | None = None) -> nn.Module:
        """The card's model with these weights loaded."""
        model = self.card.model.build(source)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0]
            raise SegkitError(source, f"weights do not fit model {self.card.model.name!r}: {first_line}") from None
        return model


def _upgrade_v1(state: dict[str, Any]) -> dict[str, Any]:
    """A version 1 checkpoint (card fields at the top level) in the version 2 layout."""
    card: dict[str, Any] = {
        key: state[key]
        for key in ("model", "classes", "palette", "preprocess", "binary", "threshold", "ignore_index")
        if key in state
    }
    card["training"] = {
        "epoch": state.get("epoch", 0),
        "best_metric": state.get("best_metric"),
        "metrics": state.get("best_metrics", {}),
        "history": state.get("history", []),
        "config": state.get("config", {}),
    }
    resume_keys = ("optimizer", "scheduler", "scaler", "rng")
    resume = {key: state[key] for key in resume_keys if key in state} or None
    return {"card": card, "state_dict": state.get("state_dict"), "resume": resume}


def open_checkpoint(checkpoint: str | Path | Checkpoint) -> Checkpoint:
    """A checkpoint as given: a loaded one, a ``.pt`` file, or a folder written by ``segkit export --format hf``."""
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    path = Path(checkpoint)
    return load_pretrained(path) if path.is_dir() else load_checkpoint(path)


def load_pretrained(folder: str | Path) -> Checkpoint:
    """Read a Hugging-Face-style model folder (``config.json`` + ``model.safetensors``, ``segkit export --format hf``).

    Raises:
        SegkitError: a missing or malformed file, naming it.
    """
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config, weights):
        if not path.is_file():
            raise SegkitError(
                path, f"not found: a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE} (segkit export --format hf)"
            )
    try:
        card_data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SegkitError(config, f"not a readable model card ({error})") from None
    card = ModelCard.from_dict(card_data, config)
    try:
        state_dict = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        raise SegkitError(weights, f"not a readable safetensors file ({error})") from None
    return Checkpoint(card, state_dict)


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    import torch

    from segkit.files import atomic_write

    state = checkpoint.to_dict()
    atomic_write(path, lambda temp: torch.save(state, temp), durable=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint safely: ``weights_only=True`` (never runs code from the file), card checked.

    Raises:
        SegkitError: a missing, truncated, unsafe or malformed file, naming it and what to use instead.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise SegkitError(path, "checkpoint not found" if not path.exists() else "not a file (expected a checkpoint)")
    check_archive(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise SegkitError(path, f"refused to load: not a plain-tensor checkpoint ({first_line})") from None
    except Exception as error:  # torch raises many types for truncated files and files that are not checkpoints
        raise SegkitError(
            path, f"not a readable checkpoint ({error.__class__.__name__}){_alternatives(path)}"
        ) from None
    return Checkpoint.from_dict(state, path)


def check_archive(path: str | Path) -> None:
    """Refuse, from its zip directory alone, a checkpoint that would unpack to more than its own size.

    ``torch.save`` stores every entry uncompressed, so a real checkpoint's entries add up to
    less than the file. A compressed entry (a deflated bomb: megabytes that inflate to
    gigabytes) or entries that overlap (the same bytes listed many times) are refused before
    ``torch.load`` reads a byte of them; reading the directory costs milliseconds and no memory.
    Files that are not zip archives are left to ``torch.load`` (it says what they are).

    Raises:
        SegkitError: a compressed or overlapping entry, or too many entries, naming the file.
    """
    import zipfile

    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        raise SegkitError(
            path, f"not a readable checkpoint ({error.__class__.__name__}){_alternatives(path)}"
        ) from None
    if len(entries) > MAX_ARCHIVE_ENTRIES:
        raise SegkitError(path, f"refused to load: {len(entries):,} entries, more than {MAX_ARCHIVE_ENTRIES:,}")
    compressed = [entry for entry in entries if entry.compress_type != zipfile.ZIP_STORED]
    if compressed:
        entry = compressed[0]
        raise SegkitError(
            path,
            f"refused to load: {len(compressed)} compressed entr{'y' if len(compressed) == 1 else 'ies'} "
            f"({entry.filename}: {entry.compress_size:,} bytes that unpack to {entry.file_size:,}); "
            "torch.save never compresses, so this is not a checkpoint it wrote",
        )
    unpacked, size = sum(entry.file_size for entry in entries), path.stat().st_size
    if unpacked > size:
        raise SegkitError(
            path,
            f"refused to load: its entries unpack to {unpacked:,} bytes, more than the file's {size:,} "
            "(entries that overlap: not a checkpoint torch.save wrote)",
        )


def _alternatives(path: Path) -> str:
    """``; use best.pt or epoch_007.pt instead`` when the run folder has other checkpoints."""
    others = [path.parent / "best.pt"] + sorted(path.parent.glob("epoch_*.pt"), reverse=True)[:1]
    usable = [str(other) for other in others if other.is_file() and other != path]
    return f"; use {' or '.join(usable)} instead" if usable else ""
