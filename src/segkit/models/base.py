"""What every segkit model shares: any input size in, logits at that size out.

Networks down-sample by a fixed factor (their *stride*), so most of them only
accept inputs whose sides are multiples of it. :class:`SegmentationModel`
pads the input up to such a multiple, runs the network and crops the logits
back, so callers can feed any ``(N, C, H, W)`` tensor. Architectures written
in segkit subclass it and implement :meth:`SegmentationModel.forward_padded`;
third-party networks (e.g. ``segmentation_models_pytorch``) are wrapped with
:class:`PaddedModel`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from segkit.errors import SegkitError

Output = torch.Tensor | list[torch.Tensor]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom and right of an ``(N, C, H, W)`` tensor to sides divisible by ``multiple``.

    Zero is the dataset mean after normalisation, so padding adds no signal.
    """
    height, width = x.shape[-2:]
    pad_bottom = (-height) % multiple
    pad_right = (-width) % multiple
    if pad_bottom == 0 and pad_right == 0:
        return x
    return F.pad(x, (0, pad_right, 0, pad_bottom))


def crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left ``height`` x ``width`` window of an ``(N, C, H, W)`` tensor (undoes :func:`pad_to_multiple`)."""
    return x[..., :height, :width]


def _to_input_size(logits: torch.Tensor, padded: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bring one output to the padded input's size (bilinear when coarser) and crop the padding off."""
    if logits.shape[-2:] != padded.shape[-2:]:
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
    return crop(logits, height, width)


def _keep_in_eval(module: nn.Module, _inputs: object) -> None:
    """Forward pre-hook of a frozen BatchNorm layer: never update the running statistics."""
    module.eval()


class SegmentationModel(nn.Module, ABC):
    """Base class: pads to ``stride``, runs :meth:`forward_padded`, returns logits at the input size.

    Models with a pretrainable encoder expose it as ``encoder``; :meth:`freeze_encoder`
    stops (and resumes) training it.

    ``forward_padded`` may return one tensor or, for deep supervision, a list
    ``[main, side1, ...]`` (at any resolution; coarser outputs are upsampled
    bilinearly). In training mode the list comes back with every output at the
    input size; in eval mode only the main output is returned, so inference code
    always sees a single ``(N, num_classes, H, W)`` tensor.

    Args:
        stride: total down-sampling factor of the network; inputs are padded
            to a multiple of it.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = stride
        self._encoder_frozen = False
        self._freeze_hooks: list[RemovableHandle] = []

    @abstractmethod
    def forward_padded(self, x: torch.Tensor) -> Output:
        """Run the network on an input whose sides are multiples of ``stride``."""

    def freeze_encoder(self, frozen: bool = True) -> SegmentationModel:
        """Freeze (or unfreeze) the encoder for training; returns the model.

        A frozen encoder's parameters get ``requires_grad=False`` and its BatchNorm layers run
        in eval mode at every forward pass, also after ``model.train()``, so their running
        statistics keep the pretrained values. Unfreezing undoes both. Optimisers should be
        built over all parameters (those without gradients are skipped), so unfreezing later
        trains the encoder.

        Raises:
            SegkitError: the model has no encoder.
        """
        encoder = self._encoder()
        for parameter in encoder.parameters():
            parameter.requires_grad_(not frozen)
        for handle in self._freeze_hooks:
            handle.remove()
        batchnorms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._freeze_hooks = [bn.register_forward_pre_hook(_keep_in_eval) for bn in batchnorms] if frozen else []
        for bn in batchnorms:
            bn.train(self.training and not frozen)
        self._encoder_frozen = frozen
        return self

    @property
    def encoder_frozen(self) -> bool:
        """Whether :meth:`freeze_encoder` froze the encoder."""
        return self._encoder_frozen

    def _encoder(self) -> nn.Module:
        encoder = getattr(self, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise SegkitError(None, f"model {type(self).__name__} has no encoder to freeze")
        return encoder

    def forward(self, x: torch.Tensor) -> Output:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.stride)
        output = self.forward_padded(padded)
        if isinstance(output, (list, tuple)):
            if not self.training:
                return _to_input_size(output[0], padded, height, width)
            return [_to_input_size(item, padded, height, width) for item in output]
        return _to_input_size(output, padded, height, width)


class PaddedModel(SegmentationModel):
    """Wrap a network that needs input sides divisible by ``stride`` (e.g. an smp model).

    Args:
        net: a module mapping ``(N, C, H, W)`` to logits or a list of logits.
        stride: the size multiple ``net`` requires.
    """

    def __init__(self, net: nn.Module, stride: int) -> None:
        super().__init__(stride)
        self.net = net

    def forward_padded(self, x: torch.Tensor) -> Output:
        return self.net(x)
