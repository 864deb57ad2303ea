"""Pretrained weights: library downloads, weight files, and frozen encoders.

Three jobs:

* :func:`downloading` wraps the libraries' own weight downloads (torchvision
  ``weights="DEFAULT"``, smp ``encoder_weights="imagenet"``, timm
  ``pretrained=True``) so that a machine without network gets one clear
  :class:`~segkit.errors.SegkitError` instead of a stack of HTTP retries.
* :func:`load_weights` loads a weights file into a built model: a segkit
  checkpoint, a plain state dict (``.pt``/``.pth``), a ``{"state_dict": ...}``
  or ``{"model": ...}`` wrapper, or ``.safetensors``. Tensors whose shape does
  not fit (e.g. a head for another number of classes) are skipped and keep
  their fresh initialisation, and an encoder-only file (a timm/torchvision
  backbone) is placed into the model's encoder automatically.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from segkit.errors import SegkitError

logger = logging.getLogger(__name__)

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
STATE_DICT_KEYS = ("state_dict", "model")  # segkit/Lightning checkpoints, torchvision/timm training scripts


@contextlib.contextmanager
def downloading(what: str) -> Iterator[None]:
    """Turn a failed weight download inside the block into a one-line :class:`SegkitError`.

    Every download path of torchvision (``urllib``), smp and timm
    (``huggingface_hub``) raises a subclass of :class:`OSError` when the network
    is unreachable and the weights are not cached.

    Args:
        what: the weights, as the message should name them (e.g. ``"encoder resnet34"``).
    """
    try:
        yield
    except OSError as error:
        raise SegkitError(
            None,
            f"could not download pretrained weights for {what} (no network?); "
            "download them elsewhere and pass --weights FILE, or train without --pretrained",
        ) from error


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did, by model/file key.

    Attributes:
        loaded: model keys that received a tensor from the file.
        missing: model keys the file has no tensor for (they keep their initialisation).
        unexpected: file keys that match no model key (ignored).
        mismatched: model keys whose tensor in the file has another shape (skipped,
            they keep their initialisation, e.g. a head for another number of classes).
        prefix: where the file's keys were placed in the model (``""`` for the whole model,
            e.g. ``"net.encoder."`` for an encoder-only file).
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]
    prefix: str = ""

    def summary(self) -> str:
        """One line: counts and the first few keys of each kind."""

        def listed(label: str, keys: tuple[str, ...]) -> str:
            shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            return f"{len(keys)} {label}" + (f" ({shown})" if keys else "")

        where = f" into {self.prefix.rstrip('.')}" if self.prefix else ""
        parts = [
            listed("missing", self.missing),
            listed("unexpected", self.unexpected),
            listed("mismatched", self.mismatched),
        ]
        return f"loaded {len(self.loaded)} tensors{where}; " + "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, with wrapper prefixes (``module.``, ``_orig_mod.``) removed.

    Accepts ``.safetensors``, a plain state dict, a segkit checkpoint or a
    ``{"state_dict": ...}``/``{"model": ...}`` wrapper; pickled files load with
    ``weights_only=True`` so a file can never run code.

    Raises:
        SegkitError: missing file, unreadable or unsafe content, or no tensors in it.
    """
    path = Path(path)
    if not path.is_file():
        raise SegkitError(path, "weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            content: object = load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise SegkitError(path, f"not a readable safetensors file ({error})") from None
    else:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "Unsupported global" in str(error):  # a pickled object weights_only refuses to run
                raise SegkitError(path, "refused to load: holds objects other than tensors (weights_only)") from None
            raise SegkitError(path, "not a readable weights file (corrupt, or not saved by PyTorch)") from None
        except (RuntimeError, EOFError, OSError, ValueError) as error:
            raise SegkitError(path, f"not a readable weights file ({error.__class__.__name__}: {error})") from None
    state = _unwrap(content)
    tensors = {_strip_wrappers(key): value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise SegkitError(path, "contains no tensors (expected a state dict, a checkpoint or .safetensors)")
    return tensors


def _unwrap(content: object) -> Mapping[str, object]:
    """The state dict inside a checkpoint-like dict (``state_dict`` first: segkit's ``model`` is metadata)."""
    if not isinstance(content, Mapping):
        return {}
    for key in STATE_DICT_KEYS:
        inner = content.get(key)
        if isinstance(inner, Mapping) and any(isinstance(value, torch.Tensor) for value in inner.values()):
            return inner
    return content


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _find_placement(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """``(drop, add)``: file key ``drop + k`` goes to model key ``add + k`` for the most same-shaped tensors.

    ``add`` is any submodule path of the model (``""``, ``"net.encoder."``,
    ...), ``drop`` is empty or the file keys' first component (``"features."``
    of a torchvision VGG, ``"backbone."``, ...). Ties prefer the shortest.
    """
    prefixes_of: dict[str, list[str]] = defaultdict(list)  # key suffix -> model prefixes that complete it
    for key in target:
        parts = key.split(".")
        for cut in range(len(parts)):
            prefixes_of[".".join(parts[cut:])].append(".".join(parts[:cut]) + "." if cut else "")
    votes: Counter[tuple[str, str]] = Counter()
    for key, tensor in source.items():
        first, _, rest = key.partition(".")
        for drop, suffix in (("", key), (first + ".", rest)):
            for add in prefixes_of.get(suffix, ()):
                if target[add + suffix].shape == tensor.shape:
                    votes[(drop, add)] += 1
    if not votes:
        return "", ""
    return max(votes, key=lambda pair: (votes[pair], -len(pair[0]) - len(pair[1])))


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = False, prefix: str | None = None) -> LoadReport:
    """Load a weights file into ``model`` for fine-tuning or inference.

    Tensors are matched by name; those whose shape differs from the model's
    are skipped so the layer keeps its fresh initialisation (a head trained for
    another number of classes). Where the file's keys belong is detected: the
    whole model, or a submodule such as the encoder for a backbone-only file
    (torchvision ``features.``/timm keys land in ``model.encoder``).

    Args:
        model: the built model (e.g. ``create_model(..., pretrained=False)``).
        path: ``.safetensors``, ``.pt``/``.pth`` state dict, segkit checkpoint, or a
            ``{"state_dict": ...}``/``{"model": ...}`` wrapper.
        strict: raise unless every model tensor is loaded and every file tensor used.
        prefix: model key prefix for the file's keys (e.g. ``"net.encoder."``);
            ``None`` detects it.

    Returns:
        The :class:`LoadReport` (also logged on one line).

    Raises:
        SegkitError: unreadable file, nothing matches the model, or ``strict`` and
            anything is missing, unexpected or mismatched.
    """
    source = read_state_dict(path)
    target = model.state_dict()
    drop, add = ("", prefix) if prefix is not None else _find_placement(source, target)
    placed = {add + key[len(drop) :]: tensor for key, tensor in source.items() if key.startswith(drop)}
    unexpected = sorted(key for key in source if not key.startswith(drop))
    unexpected += sorted(key for key in placed if key not in target)
    mismatched = {key for key in placed if key in target and placed[key].shape != target[key].shape}
    loadable = {key: tensor for key, tensor in placed.items() if key in target and key not in mismatched}
    if not loadable:
        raise SegkitError(path, "no tensor in the file matches the model (is it weights for this architecture?)")
    model.load_state_dict(loadable, strict=False)
    report = LoadReport(
        loaded=tuple(sorted(loadable)),
        missing=tuple(sorted(set(target) - set(placed))),
        unexpected=tuple(unexpected),
        mismatched=tuple(sorted(mismatched)),
        prefix=add,
    )
    logger.info("%s: %s", path, report.summary())
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise SegkitError(path, f"does not match the model exactly: {report.summary()}")
    return report
