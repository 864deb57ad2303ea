"""Model registry: every architecture is built by name from plain keyword arguments.

Architectures register a builder (a function or a class) with
:func:`register_model`; everything else in segkit (training, checkpoints,
prediction, ``segkit models``) goes through :func:`create_model`, so a model
is fully described by its name, ``num_classes``, ``in_channels`` and a dict of
built-in keyword arguments that a checkpoint can store.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from segkit.errors import SegkitError

Builder = Callable[..., nn.Module]
PLAIN_TYPES = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model without building it.

    Attributes:
        name: registry name (``create_model(name, ...)``).
        family: architecture family, e.g. ``"unet"``; several names may share one.
        paper: the reference, e.g. ``"Ronneberger et al., MICCAI 2015"``.
        pretrained_encoder: whether the encoder can start from ImageNet weights.
        output_stride: down-sampling factor of the deepest features with default options.
        test_kwargs: options that make the model small for the shared tests.
    """

    name: str
    family: str
    paper: str
    pretrained_encoder: bool = False
    output_stride: int | None = None
    test_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    builder: Builder


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    family: str,
    paper: str,
    pretrained_encoder: bool = False,
    output_stride: int | None = None,
    test_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, in_channels=3, **options) -> nn.Module``.

    The built module must return logits ``(N, num_classes, H, W)`` at the
    input's size for any input size (subclass
    :class:`segkit.models.base.SegmentationModel` or wrap with
    :class:`segkit.models.base.PaddedModel`). Builders of models with
    ``pretrained_encoder=True`` must accept ``pretrained: bool`` so that segkit
    can build the bare architecture without downloading anything.

    Args:
        name: unique registry name.
        family: architecture family.
        paper: reference shown by ``segkit models``.
        pretrained_encoder: whether the encoder can load ImageNet weights.
        output_stride: deepest feature stride with default options.
        test_kwargs: options giving a tiny model for the shared tests
            (``tests/models/test_all_models.py`` runs every registered model).
    """

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        info = ModelInfo(
            name=name,
            family=family,
            paper=paper,
            pretrained_encoder=pretrained_encoder,
            output_stride=output_stride,
            test_kwargs=dict(test_kwargs or {}),
        )
        _REGISTRY[name] = _Entry(info, builder)
        return builder

    return decorator


def unregister_model(name: str) -> None:
    """Remove a model registered by :func:`register_model` (a plugin unloading, a test cleaning up).

    Raises:
        SegkitError: no model of that name is registered.
    """
    _entry(name)
    del _REGISTRY[name]


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell pattern such as ``"unet*"``."""
    names = sorted(_REGISTRY)
    if pattern is None:
        return names
    return [name for name in names if fnmatch.fnmatchcase(name, pattern.lower())]


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SegkitError(None, f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model; unknown names raise :class:`SegkitError`."""
    return _entry(name).info


def model_options(name: str) -> dict[str, Any]:
    """The options a model accepts besides ``num_classes``/``in_channels``, with their defaults.

    Options without a default map to :data:`inspect.Parameter.empty`; a builder
    that forwards ``**kwargs`` lists only its named options.
    """
    parameters = list(inspect.signature(_entry(name).builder).parameters.values())[2:]
    return {
        parameter.name: parameter.default
        for parameter in parameters
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }


def _accepts_any_keyword(builder: Builder) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values())


def _is_plain(value: Any) -> bool:
    if isinstance(value, PLAIN_TYPES):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


def _check_options(name: str, builder: Builder, kwargs: Mapping[str, Any]) -> None:
    """Reject unknown options and values a checkpoint could not store, before building."""
    options = model_options(name)
    unknown = sorted(set(kwargs) - set(options))
    if unknown and not _accepts_any_keyword(builder):
        raise SegkitError(
            None,
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; options: {', '.join(options) or 'none'}",
        )
    for key, value in kwargs.items():
        if not _is_plain(value):
            raise SegkitError(
                None,
                f"model {name!r} option {key!r} must be a plain value (number, string, bool, list), "
                f"got {type(value).__name__}",
            )


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see :func:`list_models`).
        num_classes: output channels; 1 means binary mode (one logit, sigmoid by the caller).
        in_channels: input image channels.
        **kwargs: the model's options (plain built-in values, stored in checkpoints).

    Returns:
        A module mapping ``(N, in_channels, H, W)`` to logits ``(N, num_classes, H, W)``.

    Raises:
        SegkitError: unknown name, unknown option or an invalid option value.
    """
    entry = _entry(name)
    for label, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SegkitError(None, f"model {name!r}: {label} must be a positive integer, got {value!r}")
    _check_options(name, entry.builder, kwargs)
    try:
        return entry.builder(num_classes, in_channels, **kwargs)
    except (TypeError, ValueError) as error:
        raise SegkitError(None, f"cannot build model {name!r} with options {kwargs}: {error}") from error


@dataclass(frozen=True)
class ModelSummary:
    """Size and cost of a model with default options (the ``segkit models`` table)."""

    info: ModelInfo
    parameters: int
    gflops: float
    input_size: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``segkit models --json``)."""
        return {
            "name": self.info.name,
            "family": self.info.family,
            "parameters": self.parameters,
            "gflops": round(self.gflops, 3),
            "input_size": self.input_size,
            "output_stride": self.info.output_stride,
            "pretrained_encoder": self.info.pretrained_encoder,
            "paper": self.info.paper,
        }


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one eval-mode forward pass (multiply-add counted as 2, as FlopCounterMode does).

    The input lives on the model's device, so a model built under
    ``torch.device("meta")`` is counted without allocating memory or computing.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.empty(input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops()


def summarize_model(name: str, num_classes: int = 2, input_size: int = 512) -> ModelSummary:
    """Parameter count and GFLOPs at ``1 x 3 x input_size x input_size`` with default options.

    The model is built on the meta device (shapes only), so this is fast and
    downloads nothing (pretrained encoders are built with ``pretrained=False``).
    """
    import torch

    info = model_info(name)
    kwargs = {"pretrained": False} if info.pretrained_encoder else {}
    with torch.device("meta"):
        model = create_model(name, num_classes, **kwargs)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    flops = count_flops(model, (1, 3, input_size, input_size))
    return ModelSummary(info=info, parameters=parameters, gflops=flops / 1e9, input_size=input_size)


def describe_models(pattern: str | None = None, input_size: int = 512) -> list[ModelSummary]:
    """Every registered model matching ``pattern`` with its size and cost: ``segkit models``.

    Args:
        pattern: a shell pattern filtering the names (``"unet*"``); None: every model.
        input_size: the input side of the GFLOP count (one ``1 x 3 x size x size`` forward pass).

    Returns:
        One :class:`ModelSummary` per model (``.to_dict()``: name, family, parameters, gflops ...).

    Raises:
        SegkitError: ``input_size`` below 1, or no model matching ``pattern``.

    Example:
        >>> import segkit
        >>> [(summary.info.name, summary.parameters) for summary in segkit.describe_models("unet*")]
    """
    if input_size < 1:
        raise SegkitError(None, f"--size must be positive, got {input_size}")
    names = list_models(pattern)
    if not names:
        raise SegkitError(None, f"no model matches {pattern!r}; available: {', '.join(list_models())}")
    return [summarize_model(name, input_size=input_size) for name in names]
