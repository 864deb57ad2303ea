"""The training configuration: one dataclass, from the command line or a YAML file."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segkit.errors import SegkitError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"``."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise SegkitError(None, f"cannot read duration {text!r} (use e.g. 90s, 10m, 1.5h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.yaml`` and in checkpoints."""

    data: str = ""
    val: str | None = None
    val_split: float = 0.2
    masks: str | None = None
    colors: str | None = None
    classes: str | None = None
    ignore_index: int = 255
    mode: str = "auto"  # auto | multiclass | binary (auto: binary for two classes)
    threshold: float = 0.5

    model: str = "unet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    encoder: str | None = None  # encoder of smp-based models (resnet50, tu-<timm name>, ...)
    pretrained: bool = False  # the library's ImageNet encoder weights (downloads)
    weights: str | None = None  # local checkpoint / state dict / .safetensors to start from
    freeze_encoder: int = 0  # keep the encoder frozen for this many epochs

    img_size: int | list[int] = 256
    resize: str = "letterbox"  # letterbox | resize | crop
    augment: str = "default"  # none | light | default
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    batch_size: int = 8
    epochs: int | None = None  # None with a time budget: as many as fit
    time_budget: float | None = None  # seconds
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | adam | sgd
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine | poly | constant
    warmup_epochs: float = 1.0
    loss: str = "ce+dice"
    class_weights: str | list[float] | None = None  # None | "auto" | [w0, w1, ...]
    label_smoothing: float = 0.0

    device: str = "auto"
    precision: str = "32"  # 32 | bf16 | 16-mixed
    compile: bool = False  # torch.compile the training step
    channels_last: bool = True  # NHWC memory format: faster convolution kernels on CPU and GPU
    num_workers: int = 0
    seed: int = 0
    out: str | None = None
    resume: str | None = None
    save_every: int = 0
    patience: int = 0  # early stopping on validation mIoU; 0 = off
    num_samples: int = 4
    overwrite: bool = False

    DEFAULT_EPOCHS = 50

    def __post_init__(self) -> None:
        if self.time_budget is not None:
            self.time_budget = parse_duration(self.time_budget)
        checks = {
            "mode": ("auto", "multiclass", "binary"),
            "resize": ("letterbox", "resize", "crop"),
            "optimizer": ("adamw", "adam", "sgd"),
            "scheduler": ("cosine", "poly", "constant"),
            "precision": ("32", "bf16", "16-mixed"),
            "augment": ("none", "light", "default"),
        }
        for name, allowed in checks.items():
            value = str(getattr(self, name))
            if value not in allowed:
                raise SegkitError(None, f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, not {value!r}")
            setattr(self, name, value)
        if not 0.0 <= self.val_split < 1.0:
            raise SegkitError(None, f"--val-split must be in [0, 1), not {self.val_split}")
        if self.epochs is not None and self.epochs < 1:
            raise SegkitError(None, f"--epochs must be at least 1, not {self.epochs}")
        if self.batch_size < 1:
            raise SegkitError(None, f"--batch-size must be at least 1, not {self.batch_size}")

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the network input."""
        if isinstance(self.img_size, int):
            return (self.img_size, self.img_size)
        height, width = self.img_size
        return (int(height), int(width))

    @property
    def max_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return 10**6 if self.time_budget else self.DEFAULT_EPOCHS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SegkitError(None, f"unknown training option(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Options from a YAML file (keys as in ``config.yaml``), then ``overrides`` on top."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise SegkitError(path, "config file not found") from None
        except yaml.YAMLError as error:
            raise SegkitError(path, f"not valid YAML ({error.__class__.__name__})") from None
        if not isinstance(values, dict):
            raise SegkitError(path, "a config file must hold a mapping of option: value")
        values = {key.replace("-", "_"): value for key, value in values.items()}
        values.update(overrides)
        try:
            return cls.from_dict(values)
        except SegkitError as error:
            raise SegkitError(path, error.problem) from None
        except TypeError as error:
            raise SegkitError(path, str(error)) from None
