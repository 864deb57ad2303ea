"""Segmentation models by name: ``create_model("unet", num_classes=3)``.

Every model maps ``(N, C, H, W)`` images of any size to logits
``(N, num_classes, H, W)`` (see :mod:`segkit.models.base`). Importing this
package registers all architectures.
"""

from __future__ import annotations

from segkit.models import (  # noqa: F401  (importing a module registers its models)
    fcn,
    mobilenet_unet,
    segnet,
    smp_models,
    u2net,
    unet,
)
from segkit.models.base import PaddedModel, SegmentationModel, crop, pad_to_multiple
from segkit.models.registry import (
    ModelInfo,
    ModelSummary,
    count_flops,
    create_model,
    list_models,
    model_info,
    model_options,
    register_model,
    summarize_model,
    unregister_model,
)

__all__ = [
    "ModelInfo",
    "ModelSummary",
    "PaddedModel",
    "SegmentationModel",
    "count_flops",
    "create_model",
    "crop",
    "list_models",
    "model_info",
    "model_options",
    "pad_to_multiple",
    "register_model",
    "summarize_model",
    "unregister_model",
]
