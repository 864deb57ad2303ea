"""ImageNet encoder weights: found offline where the libraries cache them, downloaded when the network allows.

torchvision, smp and timm each download an encoder's ImageNet weights on first use and
cache them (torchvision in the torch hub cache, ``$TORCH_HOME/hub/checkpoints``; smp and
timm in the Hugging Face cache, ``$HF_HUB_CACHE``). Offline, their own loaders fail after
network time-outs (Hugging Face retries for about a minute) even when a usable file is on
disk under another name or version. segkit therefore looks first for every known file name
of an encoder's weights — any known version counts — in ``$SEGKIT_WEIGHTS`` (folders or
files, ``os.pathsep``-separated), the torch hub cache and the Hugging Face cache, and loads
a file found there itself (:func:`segkit.models.pretrained.load_weights` places it into
the encoder). Only when nothing is found and a short connection test (≤ 1.5 s) reaches
the library's server does it let the library download.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from segkit.errors import SegkitError

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

NETWORK_TIMEOUT = 1.5  # seconds for the connection test, name lookup included
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class KnownWeights:
    """Where an encoder's ImageNet weights may be found.

    Attributes:
        encoder: the encoder's name (smp's, or timm's without ``tu-``).
        files: known file names (torchvision's hub checkpoints, timm's and others), newest first.
        hub_repos: Hugging Face repositories holding them (smp-hub, timm).
        host: the server the library downloads from.
    """

    encoder: str
    files: tuple[str, ...] = ()
    hub_repos: tuple[str, ...] = ()
    host: str = "huggingface.co"


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    item.encoder: item
    for item in (
        KnownWeights(
            "mobilenet_v2",
            ("mobilenet_v2-7ebf99e0.pth", "mobilenet_v2-b0353104.pth"),
            ("smp-hub/mobilenet_v2.imagenet",),
            "download.pytorch.org",
        ),
        KnownWeights("resnet18", ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"), ("smp-hub/resnet18.imagenet",)),
        KnownWeights("resnet34", ("resnet34-b627a593.pth", "resnet34-333f7ec4.pth"), ("smp-hub/resnet34.imagenet",)),
        KnownWeights(
            "resnet50",
            ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth", "resnet50-19c8e357.pth"),
            ("smp-hub/resnet50.imagenet",),
        ),
        KnownWeights("efficientnet_b0", ("efficientnet_b0_ra-3dd342df.pth",), ("timm/efficientnet_b0.ra_in1k",)),
        KnownWeights("mit_b0", (), ("smp-hub/mit_b0.imagenet",)),
    )
}

# The encoder of models whose encoder is not an option.
MODEL_ENCODERS = {
    "mobilenetv2-unet": "mobilenet_v2",
    "unet-resnet34": "resnet34",
    "unet-efficientnet-b0": "efficientnet_b0",
}


def encoder_name(model: str, kwargs: Mapping[str, Any] | None = None) -> str | None:
    """The ImageNet encoder model ``model`` built with ``kwargs`` uses (``None`` for models without a pretrainable encoder)."""
    from segkit.models.registry import model_info, model_options

    if not model_info(model).pretrained_encoder:
        return None
    name = (kwargs or {}).get("encoder") or MODEL_ENCODERS.get(model) or model_options(model).get("encoder")
    if not isinstance(name, str):
        return None
    return name[3:].split(".")[0] if name.startswith("tu-") else name


def search_paths() -> list[Path]:
    """Where weight files are looked for: ``$SEGKIT_WEIGHTS`` entries, then the torch hub cache."""
    import torch

    paths = [Path(entry) for entry in os.environ.get("SEGKIT_WEIGHTS", "").split(os.pathsep) if entry]
    return [*paths, Path(torch.hub.get_dir()) / "checkpoints"]


def _hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def find_weights(encoder: str) -> Path | None:
    """A local file of ``encoder``'s ImageNet weights, or ``None``."""
    known = KNOWN_WEIGHTS.get(encoder)
    if known is None:
        return None
    for place in search_paths():
        if place.is_file() and place.name in known.files:
            return place
        for name in known.files:
            if (place / name).is_file():
                return place / name
    for repo in known.hub_repos:
        snapshots = _hf_cache() / f"models--{repo.replace('/', '--')}" / "snapshots"
        for name in HF_WEIGHT_FILES:
            found = sorted(snapshots.glob(f"*/{name}"))
            if found:
                return found[-1]
    return None


@cache
def network_reachable(host: str, timeout: float = NETWORK_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host:443`` opens within ``timeout`` seconds (name lookup included)."""
    if host == "huggingface.co" and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)  # getaddrinfo ignores socket time-outs
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@dataclass(frozen=True)
class WeightsStatus:
    """Whether an encoder's ImageNet weights can be had here: a local file, a download, or neither."""

    encoder: str
    path: Path | None
    downloadable: bool

    @property
    def available(self) -> bool:
        return self.path is not None or self.downloadable

    def describe(self) -> str:
        if self.path is not None:
            return str(self.path)
        return "downloadable" if self.downloadable else "not available (offline, no local file)"


def weights_status(encoder: str) -> WeightsStatus:
    """Where ``encoder``'s weights are (a second or two at most, when a connection test is needed)."""
    path = find_weights(encoder)
    known = KNOWN_WEIGHTS.get(encoder)
    host = known.host if known is not None else "huggingface.co"
    return WeightsStatus(encoder, path, path is None and network_reachable(host))


def weights_report() -> list[WeightsStatus]:
    """Which ImageNet encoder weights can be had on this machine: ``segkit weights``.

    Returns:
        One :class:`WeightsStatus` per known encoder: ``.path`` (the local file found, or None),
        ``.downloadable``, ``.describe()``.

    Example:
        >>> import segkit
        >>> [(status.encoder, status.path) for status in segkit.weights() if status.available]
    """
    return [weights_status(encoder) for encoder in KNOWN_WEIGHTS]


def encoder_users(encoder: str) -> list[str]:
    """Registered models whose default encoder is ``encoder`` (others take it through ``--encoder``)."""
    from segkit.models.registry import list_models, model_info

    return [name for name in list_models() if model_info(name).pretrained_encoder and encoder_name(name) == encoder]


class BuildableSpec(Protocol):
    """What :func:`pretrained_model` needs of a model description (:class:`segkit.checkpoint.ModelSpec` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def kwargs(self) -> dict[str, Any]: ...

    def build(self, source: str | Path | None = None, **extra: Any) -> nn.Module: ...


def pretrained_model(spec: BuildableSpec) -> nn.Module:
    """The model of ``spec`` with its encoder's ImageNet weights: a local file if there is one, else a download.

    Raises:
        SegkitError: the model has no pretrainable encoder, or no weights can be had here.
    """
    from segkit.models.pretrained import downloading, load_weights

    encoder = encoder_name(spec.name, spec.kwargs)
    if encoder is None:
        raise SegkitError(None, f"--pretrained: model {spec.name!r} has no pretrained encoder (see `segkit models`)")
    status = weights_status(encoder)
    if status.path is not None:
        model = spec.build()
        prefix = _encoder_prefix(model, cast("nn.Module", model.encoder))
        report = load_weights(model, status.path)
        missing = [key for key in report.missing if key.startswith(prefix)]
        if missing:
            raise SegkitError(
                status.path,
                f"does not fit encoder {encoder}: {len(missing)} encoder tensors missing "
                f"({', '.join(missing[:3])} ...)",
            )
        logger.info("encoder %s: ImageNet weights from %s", encoder, status.path)
        return model
    if status.downloadable:
        with downloading(f"encoder {encoder}"):
            return spec.build(pretrained=True)
    names = ", ".join(KNOWN_WEIGHTS[encoder].files) if encoder in KNOWN_WEIGHTS else "its weight file"
    raise SegkitError(
        None,
        f"no ImageNet weights for encoder {encoder} here and no network; put {names} into "
        "$SEGKIT_WEIGHTS (or the torch hub cache), pass --weights FILE, or train without --pretrained",
    )


def _encoder_prefix(model: nn.Module, encoder: nn.Module) -> str:
    """The state-dict prefix of ``encoder`` inside ``model`` (``"encoder."``, ``"net.encoder."`` ...)."""
    for name, module in model.named_modules():
        if module is encoder:
            return name + "."
    return ""
