"""Build a loss from a spec string such as ``"ce+dice"`` or ``"0.5*ce + 1.0*focal(gamma=3)"``.

Grammar: terms joined by ``+``; each term is ``[weight*]name[(key=value, ...)]``
with a positive float weight (default 1) and float parameters.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from segkit.errors import SegkitError
from segkit.losses.pixel import BinaryCrossEntropyLoss, CrossEntropyLoss, FocalLoss, OhemCrossEntropyLoss
from segkit.losses.region import dice_loss, lovasz_loss, tversky_loss

TERM = re.compile(
    r"^\s*(?:(?P<weight>[0-9]*\.?[0-9]+(?:[eE]-?[0-9]+)?)\s*\*\s*)?"
    r"(?P<name>[A-Za-z_]+)\s*(?:\((?P<params>[^()]*)\))?\s*$"
)


@dataclass(frozen=True)
class LossContext:
    """What every named loss is built from (the arguments of :func:`create_loss`)."""

    num_classes: int
    binary: bool
    ignore_index: int
    class_weights: torch.Tensor | None
    label_smoothing: float
    pos_weight: torch.Tensor | None


def _ce(ctx: LossContext) -> nn.Module:
    if ctx.binary:
        return _bce(ctx)
    return CrossEntropyLoss(
        ignore_index=ctx.ignore_index, class_weights=ctx.class_weights, label_smoothing=ctx.label_smoothing
    )


def _bce(ctx: LossContext) -> nn.Module:
    if not ctx.binary:
        raise SegkitError(
            None, f"loss 'bce' needs binary mode (one logit channel); use 'ce' for {ctx.num_classes} classes"
        )
    return BinaryCrossEntropyLoss(
        ignore_index=ctx.ignore_index,
        class_weights=ctx.class_weights,
        label_smoothing=ctx.label_smoothing,
        pos_weight=ctx.pos_weight,
    )


def _focal(ctx: LossContext, gamma: float = 2.0, alpha: float | None = None) -> nn.Module:
    return FocalLoss(
        binary=ctx.binary, ignore_index=ctx.ignore_index, gamma=gamma, alpha=alpha, class_weights=ctx.class_weights
    )


def _ohem(ctx: LossContext, threshold: float = 0.7, min_kept: float = 0.1) -> nn.Module:
    return OhemCrossEntropyLoss(
        binary=ctx.binary,
        ignore_index=ctx.ignore_index,
        threshold=threshold,
        min_kept=min_kept,
        class_weights=ctx.class_weights,
    )


def _dice(ctx: LossContext, smooth: float = 0.0) -> nn.Module:
    return dice_loss(binary=ctx.binary, ignore_index=ctx.ignore_index, smooth=smooth)


def _tversky(ctx: LossContext, alpha: float = 0.3, beta: float = 0.7, gamma: float = 1.0) -> nn.Module:
    return tversky_loss(binary=ctx.binary, ignore_index=ctx.ignore_index, alpha=alpha, beta=beta, gamma=gamma)


def _lovasz(ctx: LossContext) -> nn.Module:
    return lovasz_loss(binary=ctx.binary, ignore_index=ctx.ignore_index)


# Name -> factory(ctx, **float parameters). In binary mode "ce" is binary cross-entropy.
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "ce": _ce,
    "bce": _bce,
    "dice": _dice,
    "focal": _focal,
    "ohem": _ohem,
    "tversky": _tversky,
    "lovasz": _lovasz,
}


class CombinedLoss(nn.Module):
    """Weighted sum of losses; a list of logits (deep supervision) sums the loss of each output.

    Args:
        spec: the spec string it was built from (shown in ``repr``).
        terms: ``(weight, loss)`` pairs; each loss maps ``(logits, target)`` to a scalar.
    """

    def __init__(self, spec: str, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.spec = spec
        self.weights = [weight for weight, _ in terms]
        self.losses = nn.ModuleList(loss for _, loss in terms)

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):
            return self._single(logits, target)
        return torch.stack([self._single(output, target) for output in logits]).sum()

    def _single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack([weight * loss(logits, target) for weight, loss in zip(self.weights, self.losses)]).sum()

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}"


def _parse_value(spec: str, name: str, key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SegkitError(None, f"loss {spec!r}: parameter {name}({key}=...) must be a number, got {text!r}") from None


def _parse_params(spec: str, name: str, text: str | None) -> dict[str, float]:
    params: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SegkitError(None, f"loss {spec!r}: expected key=value in {name}(...), got {item.strip()!r}")
        params[key.strip()] = _parse_value(spec, name, key.strip(), value.strip())
    return params


def _build_term(spec: str, term: str, ctx: LossContext) -> tuple[float, nn.Module]:
    match = TERM.match(term)
    if match is None:
        raise SegkitError(None, f"loss {spec!r}: cannot parse {term.strip()!r}; expected [weight*]name[(key=value)]")
    name = match["name"].lower()
    if name not in LOSSES:
        raise SegkitError(None, f"unknown loss {name!r} in {spec!r}; available: {', '.join(LOSSES)}")
    weight = float(match["weight"]) if match["weight"] else 1.0
    if weight <= 0:
        raise SegkitError(None, f"loss {spec!r}: weight of {name!r} must be positive, got {weight}")
    params = _parse_params(spec, name, match["params"])
    accepted = list(inspect.signature(LOSSES[name]).parameters)[1:]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise SegkitError(
            None, f"loss {name!r} has no parameter {', '.join(unknown)}; parameters: {', '.join(accepted) or 'none'}"
        )
    try:
        return weight, LOSSES[name](ctx, **params)
    except ValueError as error:  # invalid parameter values, reported by the loss itself
        raise SegkitError(None, f"loss {spec!r}: {error}") from error


def _as_tensor(label: str, value: torch.Tensor | Sequence[float] | float | None, length: int) -> torch.Tensor | None:
    if value is None:
        return None
    tensor = torch.as_tensor(value, dtype=torch.float32).detach().clone().reshape(-1)
    if tensor.numel() != length:
        raise SegkitError(None, f"{label} needs {length} value(s), got {tensor.numel()}")
    if bool((tensor < 0).any()):
        raise SegkitError(None, f"{label} must not be negative, got {tensor.tolist()}")
    return tensor


def create_loss(
    spec: str,
    *,
    num_classes: int,
    ignore_index: int = 255,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    binary: bool = False,
    label_smoothing: float = 0.0,
    pos_weight: torch.Tensor | float | None = None,
) -> CombinedLoss:
    """Build the training loss described by ``spec``.

    Args:
        spec: ``"ce"``, ``"ce+dice"``, ``"0.5*ce+1.0*dice"``, ``"focal(gamma=3)+lovasz"``...
            Names: ce, bce, dice, focal, tversky, lovasz (see README).
        num_classes: classes of the dataset (2 in binary mode; 1 also means binary).
        ignore_index: target value excluded from every loss.
        class_weights: per-class weights for ce/bce/focal (``num_classes`` values, 2 in binary mode).
        binary: one logit channel (sigmoid); ``ce`` then means ``bce``.
        label_smoothing: ce/bce label smoothing in ``[0, 1)``.
        pos_weight: binary mode: factor on the foreground term of bce.

    Returns:
        A :class:`CombinedLoss` taking ``(logits, target)`` or ``(list_of_logits, target)``.

    Raises:
        SegkitError: unparsable spec, unknown name or parameter, inconsistent options.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SegkitError(None, f"num_classes must be a positive integer, got {num_classes!r}")
    binary = binary or num_classes == 1
    if binary and num_classes > 2:
        raise SegkitError(None, f"binary mode needs 2 classes (background, foreground), got {num_classes}")
    if not 0.0 <= label_smoothing < 1.0:
        raise SegkitError(None, f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if pos_weight is not None and not binary:
        raise SegkitError(None, "pos_weight applies to binary mode only")
    ctx = LossContext(
        num_classes=num_classes,
        binary=binary,
        ignore_index=ignore_index,
        class_weights=_as_tensor("class_weights", class_weights, 2 if binary else num_classes),
        label_smoothing=label_smoothing,
        pos_weight=_as_tensor("pos_weight", pos_weight, 1),
    )
    terms = [_build_term(spec, term, ctx) for term in spec.split("+")]
    return CombinedLoss(spec, terms)
