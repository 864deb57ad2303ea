"""The training configuration: one dataclass, the single definition of every training option.

Each field is declared with :func:`segkit.options.option` (help, choices, parser, group), so
``segkit train``'s command line is generated from it (:mod:`segkit.cli.train`), config files
use the same names, and the allowed values are checked in one place. Preprocessing options
live in the nested :class:`~segkit.data.transforms.PreprocessConfig` (which the model card
stores) and appear flat on the command line (``--img-size``, ``--resize``, ``--augment`` ...).

``user_options`` records which options the user set (on the command line, in a config file
or as keyword arguments of :func:`segkit.train`); the planner derives the others from the
data and the machine (:mod:`segkit.planning`).
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from segkit.data.options import (
    classes_option,
    colors_option,
    fit_masks_option,
    images_option,
    label_map_option,
    masks_option,
    roi_masks_option,
    skip_bad_option,
    val_split_option,
    val_split_problem,
)
from segkit.data.transforms import PreprocessConfig
from segkit.errors import SegkitError
from segkit.options import check_choices, nested, option

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

MODES = ("auto", "multiclass", "binary")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "poly", "constant")
PRECISIONS = ("32", "bf16", "16-mixed")
LOGGERS = ("csv", "tensorboard", "mlflow")


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"90s"``, ``"10m"``, ``"1.5h"``, ``"2d"`` (a number is taken as seconds).

    A text without a unit is refused: ``--time-budget 2`` could mean seconds, minutes or hours.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise SegkitError(None, f"cannot read duration {text!r} (use e.g. 90s, 10m, 1.5h)")
    if not match.group(2):
        raise SegkitError(None, f"duration {text!r} needs a unit: {text}s, {text}m or {text}h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_model_kwargs(text: str | dict[str, Any]) -> dict[str, Any]:
    """``"base_channels=16,decoder_channels=[16,8]"`` -> ``{"base_channels": 16, "decoder_channels": [16, 8]}``."""
    if isinstance(text, dict):
        return dict(text)
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in _split_top_level(text))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SegkitError(None, f"--model-kwargs: expected KEY=VALUE, got {item!r}")
        try:
            values[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = raw.strip()
    return values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets: ``"a=1,b=[2,3]"`` -> ``["a=1", "b=[2,3]"]``."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += (char in "[(") - (char in "])")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_class_weights(text: str | list[float]) -> str | list[float] | None:
    """``auto``, ``none`` (None: unweighted) or ``w0,w1,...``."""
    if isinstance(text, list):
        return [float(weight) for weight in text]
    word = text.strip()
    if word == "none":
        return None
    if word == "auto":
        return word
    try:
        return [float(weight) for weight in text.split(",")]
    except ValueError:
        raise SegkitError(None, f"--class-weights must be auto, none or numbers w0,w1,..., got {text!r}") from None


def parse_loggers(text: str | list[str]) -> list[str]:
    """``tensorboard,mlflow`` -> ``["csv", "tensorboard", "mlflow"]`` (csv is always on)."""
    names = [name.strip() for name in (text.split(",") if isinstance(text, str) else text) if name.strip()]
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise SegkitError(None, f"--logger must be among {', '.join(LOGGERS)}, not {', '.join(unknown)}")
    return ["csv"] + [name for name in dict.fromkeys(names) if name != "csv"]


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.yaml`` and in the model card.

    Every field is an option of ``segkit train`` (``--field-name``) and a key of config files.
    """

    data: str = option("", help="training data folder (labelme, images/+masks/, VOC, or with train/ val/)", cli=False)
    val: str | None = option(
        None,
        help="validation data folder (default: a val/ or valid/ split, else --val-split)",
        group="data",
        metavar="DATA",
    )
    val_split: float = val_split_option(0.2, help="fraction of the data held out for validation, deterministic by name")
    images: str | None = images_option()
    masks: str | None = masks_option()
    roi_masks: str | None = roi_masks_option()
    label_map: str | None = label_map_option()
    skip_bad: bool = skip_bad_option()
    fit_masks: bool = fit_masks_option()
    colors: str | None = colors_option()
    classes: str | None = classes_option()
    preprocess: PreprocessConfig = nested(PreprocessConfig)
    oversample: float = option(
        0.33,
        help="crop policy: share of crops centred on a pixel of a rare class present "
        "in the image (nnU-Net's foreground over-sampling)",
        parse=float,
        metavar="F",
        group="data",
    )
    num_workers: int = option(
        0,
        help="DataLoader worker processes (samples are decoded once and cached)",
        parse=int,
        metavar="N",
        planned=True,
        group="data",
    )

    model: str = option("unet", help="architecture, see `segkit models`", planned=True, group="model", metavar="NAME")
    model_kwargs: dict[str, Any] = option(
        default_factory=dict,
        help="model options, e.g. base_channels=16,depth=4",
        parse=parse_model_kwargs,
        metavar="K=V,...",
        planned=True,
        group="model",
    )
    encoder: str | None = option(
        None, help="encoder of smp-based models, e.g. resnet50, tu-convnext_tiny", group="model", metavar="NAME"
    )
    pretrained: bool = option(
        False,
        help="start the encoder from ImageNet weights (found offline in the torch hub, "
        "timm or Hugging Face caches or $SEGKIT_WEIGHTS, else downloaded)",
        parse=bool,
        planned=True,
        group="model",
    )
    weights: str | None = option(
        None,
        help="start from a local checkpoint, state dict or .safetensors (mismatched heads re-initialised)",
        metavar="FILE",
        group="model",
    )
    freeze_encoder: int = option(
        0, help="keep the encoder frozen for the first N epochs", parse=int, metavar="N", group="model"
    )
    mode: str = option(
        "auto", help="binary = one sigmoid channel; auto: binary for 2 classes", choices=MODES, group="model"
    )
    threshold: float = option(0.5, help="binary-mode probability threshold", parse=float, metavar="T", group="model")

    epochs: int | None = option(
        None,
        help="number of epochs (default: as many as fit --time-budget, else 50)",
        parse=int,
        metavar="N",
        group="optimisation",
    )
    time_budget: float | None = option(
        None,
        help="wall time for the whole run, with a unit: 90s, 10m, 1.5h",
        parse=parse_duration,
        metavar="T",
        group="optimisation",
    )
    batch_size: int = option(
        8,
        help="global batch size (split across torchrun processes)",
        parse=int,
        metavar="N",
        planned=True,
        group="optimisation",
    )
    lr: float = option(1e-3, help="peak learning rate", parse=float, planned=True, group="optimisation")
    weight_decay: float = option(1e-4, help="weight decay", parse=float, group="optimisation")
    optimizer: str = option("adamw", help="optimiser", choices=OPTIMIZERS, group="optimisation")
    momentum: float = option(0.9, help="SGD momentum", parse=float, group="optimisation")
    scheduler: str = option(
        "cosine", help="learning-rate schedule after the warm-up", choices=SCHEDULERS, group="optimisation"
    )
    warmup_epochs: float = option(
        1.0,
        help="linear warm-up length in epochs (with a time budget: 5 % of the run per epoch)",
        parse=float,
        metavar="E",
        group="optimisation",
    )
    loss: str = option(
        "ce+dice",
        help="ce, bce, dice, focal, tversky, lovasz, ohem or sums like 0.5*ce+dice",
        planned=True,
        group="optimisation",
        metavar="SPEC",
    )
    class_weights: str | list[float] | None = option(
        None,
        help="auto (inverse median frequency), none, or w0,w1,...",
        parse=parse_class_weights,
        planned=True,
        metavar="auto|none|W,...",
        group="optimisation",
    )
    label_smoothing: float = option(0.0, help="cross-entropy label smoothing", parse=float, group="optimisation")
    ema: bool = option(
        True,
        help="keep an exponential moving average of the weights; validate it too and keep the better",
        parse=bool,
        group="optimisation",
    )
    ema_decay: float = option(
        0.999, help="EMA decay per step (warmed up as timm's ModelEmaV3)", parse=float, group="optimisation"
    )
    precision: str = option(
        "32",
        help="float32, bfloat16 autocast, or float16 mixed precision (CUDA)",
        choices=PRECISIONS,
        planned=True,
        group="optimisation",
    )
    compile: bool = option(
        False,
        help="torch.compile the model for training (slow start, faster steps on GPU)",
        parse=bool,
        group="optimisation",
    )
    channels_last: bool = option(
        True, help="NHWC memory format (faster convolutions on CPU and GPU)", parse=bool, group="optimisation"
    )

    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps", group="run")
    seed: int = option(0, help="random seed (same seed: identical CPU runs)", parse=int, group="run")
    out: str | None = option(None, help="run folder (default runs/train, runs/train2, ...)", metavar="DIR", group="run")
    resume: str | None = option(
        None, help="continue a run from its last.pt (its saved options are used)", metavar="LAST_PT", group="run"
    )
    overwrite: bool = option(False, help="replace the run already in --out", parse=bool, group="run")
    save_every: int = option(0, help="also keep epoch_NNN.pt every N epochs", parse=int, metavar="N", group="run")
    val_every: int = option(
        0,
        help="validate every N epochs (0: spaced so validation takes at most 15 % of the time); always after the last",
        parse=int,
        metavar="N",
        group="run",
    )
    patience: int = option(
        0, help="stop after N validations without a mIoU gain (0 = off)", parse=int, metavar="N", group="run"
    )
    num_samples: int = option(
        4,
        help="validation images drawn in samples/epoch_NNN.png (chosen to show every class)",
        parse=int,
        metavar="N",
        group="run",
    )
    logger: list[str] = option(
        default_factory=lambda: ["csv"],
        help="experiment logs besides history.csv: tensorboard, mlflow (comma-separated)",
        parse=parse_loggers,
        metavar="NAMES",
        group="run",
    )
    plan: bool = option(
        True,
        help="derive the options you did not set from the data, the machine and the time budget (see `segkit plan`)",
        parse=bool,
        group="run",
    )
    force: bool = option(
        False,
        help="resume even though DATA holds other images than the run started with (same classes)",
        parse=bool,
        group="run",
    )
    race: bool = option(
        True,
        help="with --time-budget, race the planner's candidate recipes on the data for a share of the budget "
        "and go on with the best (--no-race: the rule-based plan)",
        parse=bool,
        group="run",
    )
    user_options: list[str] | None = option(
        None,
        help="the options the user set (dotted names); the planner derives the others. None: every field as given",
        cli=False,
    )

    DEFAULT_EPOCHS = 50

    def __post_init__(self) -> None:
        if not isinstance(self.preprocess, PreprocessConfig):
            self.preprocess = PreprocessConfig.from_dict(dict(self.preprocess or {}))
        if self.time_budget is not None:
            self.time_budget = parse_duration(self.time_budget)
            if self.time_budget <= 0:
                raise SegkitError(None, f"--time-budget must be positive, not {self.time_budget:g}s")
        self.model_kwargs = parse_model_kwargs(self.model_kwargs)
        if self.class_weights is not None:
            self.class_weights = parse_class_weights(self.class_weights)
        self.logger = parse_loggers(self.logger)
        self.precision = str(self.precision)
        check_choices(self)
        problem = val_split_problem(self.val_split)
        if problem:
            raise SegkitError(None, problem)
        if self.epochs is not None and self.epochs < 1:
            raise SegkitError(None, f"--epochs must be at least 1, not {self.epochs}")
        if self.val_every < 0:
            raise SegkitError(None, f"--val-every must be 0 (automatic) or more, not {self.val_every}")
        if self.batch_size < 1:
            raise SegkitError(None, f"--batch-size must be at least 1, not {self.batch_size}")
        if not 0.0 <= self.oversample <= 1.0:
            raise SegkitError(None, f"--oversample must be in [0, 1], not {self.oversample}")
        if not 0.0 < self.ema_decay < 1.0:
            raise SegkitError(None, f"--ema-decay must be in (0, 1), not {self.ema_decay}")

    @property
    def max_epochs(self) -> int:
        """The epoch limit: ``epochs``, else unbounded with a time budget, else :attr:`DEFAULT_EPOCHS`."""
        if self.epochs is not None:
            return self.epochs
        return 10**6 if self.time_budget else self.DEFAULT_EPOCHS

    def is_set(self, name: str) -> bool:
        """Whether the user set option ``name`` (dotted for nested ones, e.g. ``preprocess.img_size``)."""
        return self.user_options is None or name in self.user_options

    def to_dict(self) -> dict[str, Any]:
        """Built-in types only (``config.yaml``, the model card)."""
        values = dataclasses.asdict(self)
        values["preprocess"] = self.preprocess.to_dict()
        return values

    def to_yaml(self) -> str:
        """``config.yaml``: every option, usable with ``--config``."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict of field values (as ``to_dict`` writes them)."""
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SegkitError(None, f"unknown training option(s): {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as error:
            raise SegkitError(None, str(error)) from None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TrainConfig:
        """A config from what the user set (nested ``preprocess`` dict allowed); the planner derives the rest.

        Keys of :class:`~segkit.data.transforms.PreprocessConfig` may also be given at the top
        level (``img_size=256`` as ``preprocess={"img_size": 256}``).
        """
        values = dict(options)
        preprocess_names = {item.name for item in dataclasses.fields(PreprocessConfig)}
        preprocess = dict(values.pop("preprocess", None) or {})
        for name in list(values):
            if name in preprocess_names:
                preprocess[name] = values.pop(name)
        user = sorted(set(values) - {"user_options"}) + [f"preprocess.{name}" for name in sorted(preprocess)]
        return cls.from_dict({**values, "preprocess": preprocess, "user_options": user})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Options from a YAML file (keys as in ``config.yaml``), then ``overrides`` (the command line) on top."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise SegkitError(path, "config file not found") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise SegkitError(path, f"not a readable YAML file ({error.__class__.__name__})") from None
        if not isinstance(values, dict):
            raise SegkitError(path, "a config file must hold a mapping of option: value")
        values = {str(key).replace("-", "_"): value for key, value in values.items()}
        values.pop("user_options", None)  # a saved config.yaml: its options count as the user's
        if isinstance(values.get("time_budget"), (int, float)):
            logger.info("%s: time_budget %s read as seconds", path, values["time_budget"])
        overrides = dict(overrides or {})
        preprocess = {**dict(values.pop("preprocess", None) or {}), **dict(overrides.pop("preprocess", {}))}
        try:
            return cls.from_options({**values, **overrides, "preprocess": preprocess})
        except SegkitError as error:
            raise SegkitError(path, error.problem) from None


# Options a resumed run may change; every other option is the run's own.
RESUME_OVERRIDES = (
    "data",
    "val",
    "out",
    "device",
    "num_workers",
    "epochs",
    "time_budget",
    "logger",
    "save_every",
    "patience",
    "resume",
    "num_samples",
    "force",
)


def resume_config(options: dict[str, Any]) -> TrainConfig:
    """The config of ``--resume LAST_PT``: the run's own options, with only run-level ones overridable.

    Raises:
        SegkitError: an option that would change what the run trains (``--img-size``, ``--lr`` ...).
    """
    from segkit.checkpoint import load_checkpoint

    path = options["resume"]
    saved = load_checkpoint(path).card.training.config
    if not saved:
        raise SegkitError(path, "holds no training options (resume from a run's last.pt)")
    given = {name: value for name, value in options.items() if name not in RESUME_OVERRIDES and name != "preprocess"}
    changed = _changed_options(saved, given, dict(options.get("preprocess", {})))
    if changed:
        flags = "; ".join(
            f"--{name.replace('_', '-')} is {_as_typed(was)} in the run, given {_as_typed(now)}"
            for name, was, now in changed
        )
        raise SegkitError(
            path, f"cannot change when resuming: {flags}; the run continues with its own options (leave them out)"
        )
    values = {**saved, **{name: options[name] for name in options if name in RESUME_OVERRIDES}}
    values["user_options"] = None  # already planned: every option as saved
    values["out"] = options.get("out") or str(Path(path).parent)
    return TrainConfig.from_dict(values)


def _as_typed(value: Any) -> str:
    """A value as it is typed on the command line (``[32, 32]`` is ``32 32``)."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _changed_options(
    saved: dict[str, Any], given: dict[str, Any], preprocess: dict[str, Any]
) -> list[tuple[str, Any, Any]]:
    """``(option, saved value, given value)`` for each given option that differs from the run's own.

    Values are compared as the config holds them (``--img-size 96`` is the saved ``[96, 96]``).
    """
    base = TrainConfig.from_dict(saved).to_dict()
    changed = []
    for name, value in given.items():
        try:
            now = TrainConfig.from_dict({**saved, name: value}).to_dict()[name]
        except SegkitError:
            now = value
        if now != base.get(name):
            changed.append((name, base.get(name), value))
    for name, value in preprocess.items():
        try:
            now = PreprocessConfig.from_dict({**saved["preprocess"], name: value}).to_dict()[name]
        except (SegkitError, TypeError, ValueError):
            now = value
        if now != base["preprocess"].get(name):
            changed.append((name, base["preprocess"].get(name), value))
    return changed


def resolve_options(options: dict[str, Any], config_file: str | Path | None = None) -> TrainConfig:
    """The config ``segkit train``, ``segkit plan`` and :func:`segkit.train` build from what the user gave.

    ``resume`` takes the run's own options (:func:`resume_config`); else ``config_file`` (YAML)
    with ``options`` on top; else ``options`` alone. The planner derives what is not set.

    Raises:
        SegkitError: no training data, ``resume`` with a config file, or an invalid option.
    """
    if options.get("resume"):
        if config_file:
            raise SegkitError(config_file, "--config cannot be combined with --resume (the run's own options are used)")
        return resume_config(options)
    config = TrainConfig.from_yaml(config_file, options) if config_file else TrainConfig.from_options(options)
    if not config.data:
        raise SegkitError(None, "no training data: give DATA, or a --config with data:")
    return config
