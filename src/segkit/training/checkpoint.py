"""Checkpoints that carry everything needed to predict: weights, model, classes, preprocessing.

A checkpoint is a plain dict of tensors and built-in types, so it loads with
``torch.load(path, weights_only=True)``; it is written to a temporary file and
renamed into place, so a crash never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from segkit.data.io import atomic_write
from segkit.errors import SegkitError

CHECKPOINT_FORMAT = "segkit-checkpoint"
CHECKPOINT_VERSION = 1

# Keys of a checkpoint (see README "Checkpoint contents"):
#   format, version        -- "segkit-checkpoint", 1
#   model                  -- {"name": str, "num_classes": int, "in_channels": int, "kwargs": dict}
#   state_dict             -- model weights (tensors)
#   classes, palette       -- class names in index order; RGB colour per class
#   binary, threshold      -- one sigmoid channel and its threshold, or softmax over classes
#   ignore_index           -- label value ignored in loss and metrics
#   preprocess             -- {"img_size": [h, w], "resize": "letterbox"|"resize"|"crop",
#                               "mean": [...], "std": [...], "pad_value": int}
#   epoch, best_metric, history, config
#   (last.pt only) optimizer, scheduler, scaler, rng -- state to resume exactly


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    atomic_write(path, lambda temp: torch.save(checkpoint, temp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a segkit checkpoint safely (``weights_only=True``; never runs code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise SegkitError(path, "checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise SegkitError(path, f"refused to load: not a plain-tensor checkpoint ({first_line})") from None
    except Exception as error:  # torch raises many types for files that are not checkpoints
        raise SegkitError(path, f"not a readable checkpoint ({error.__class__.__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise SegkitError(path, "not a segkit checkpoint (no 'format: segkit-checkpoint' entry)")
    if checkpoint.get("version", 0) > CHECKPOINT_VERSION:
        raise SegkitError(path, f"checkpoint version {checkpoint['version']} is newer than this segkit")
    return checkpoint
