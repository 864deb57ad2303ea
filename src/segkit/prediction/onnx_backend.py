"""Run an exported ``.onnx`` model with ONNX Runtime behind the same interface as the torch model.

:class:`OnnxRuntimeModel` is an ``nn.Module`` without parameters whose forward
pass hands the normalised ``(N, 3, H, W)`` batch to an ONNX Runtime session and
returns the logits as a tensor on the batch's device. The
:class:`~segkit.prediction.predictor.Predictor` therefore keeps one
implementation of everything around the network (resize policy,
normalisation, tiling, TTA, undoing the resize, argmax/threshold) for both
backends. The preprocessing comes from the JSON the exporter stores in the
file's ``metadata_props`` (see :mod:`segkit.export.onnx`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segkit.checkpoint import ModelCard
from segkit.errors import SegkitError

logger = logging.getLogger(__name__)

METADATA_KEY = "segkit"
ONNX_FORMAT = "segkit-onnx"
ONNX_FORMAT_VERSION = 2


def onnx_providers(device: torch.device) -> list[Any]:
    """ONNX Runtime execution providers for a torch device: CUDA when asked for and available, then CPU."""
    import onnxruntime as ort

    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeModel(nn.Module):
    """An exported segkit network in an ONNX Runtime session: normalised images in, logits out.

    Args:
        path: ``.onnx`` file written by ``segkit export``.
        device: ``auto``, ``cpu``, ``cuda[:N]``: ONNX Runtime's CUDA provider when it is
            installed (``onnxruntime-gpu``), else the CPU.

    Attributes:
        metadata: the description stored at export (``card`` and ``export`` details).
        card: the model card stored at export.
        device: where the session computes (``cuda`` only with the CUDA provider).
        providers: the session's execution providers.

    Raises:
        SegkitError: not a readable ONNX file, or one without segkit metadata.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "auto") -> None:
        from segkit.device import resolve_device

        super().__init__()
        self.path = Path(path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise SegkitError(self.path, "running ONNX needs onnxruntime: pip install 'segkit[export]'") from None
        if not self.path.is_file():
            raise SegkitError(self.path, "ONNX model not found")
        requested = resolve_device(device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same thread budget as the torch path
        options.log_severity_level = 4  # fatal only: failures surface as SegkitErrors with ORT's message
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=onnx_providers(requested))
        except Exception as error:  # onnxruntime raises its own, unexported exception types
            raise SegkitError(self.path, f"not a readable ONNX model ({first_line(error)})") from None
        self.providers = self.session.get_providers()
        self.device = requested if "CUDAExecutionProvider" in self.providers else torch.device("cpu")
        if requested.type != self.device.type:
            log = logger.info if str(device) == "auto" else logger.warning
            log("onnxruntime has no provider for %s; running %s on the CPU", requested, self.path.name)
        self.metadata = read_metadata(self.session, self.path)
        self.card = ModelCard.from_dict(self.metadata.get("card", self.metadata), self.path)  # version 1: card keys at the top
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = list(model_input.shape)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        self._check_size(array.shape)
        if isinstance(self.input_shape[0], int) and array.shape[0] != self.input_shape[0]:
            # exported with a fixed batch: run the images one batch of that size at a time
            step = self.input_shape[0]
            logits = np.concatenate([self._run(array[i : i + step]) for i in range(0, len(array), step)])
        else:
            logits = self._run(array)
        return torch.from_numpy(logits).to(images.device)

    def _run(self, array: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.input_name: array})[0]
        except Exception as error:  # onnxruntime raises its own, unexported exception types
            problem = f"ONNX Runtime failed on input {list(array.shape)}: {first_line(error)}"
            raise SegkitError(self.path, problem) from None

    def _check_size(self, shape: tuple[int, ...]) -> None:
        fixed = [(expected, got) for expected, got in zip(self.input_shape[1:], shape[1:]) if isinstance(expected, int)]
        if any(expected != got for expected, got in fixed):
            raise SegkitError(
                self.path,
                f"exported for inputs of shape {self.input_shape} but got {list(shape)}; "
                "re-export with --dynamic for other sizes, tiling or scale TTA",
            )


def read_metadata(session: Any, path: Path) -> dict[str, Any]:
    """The segkit description (the model card and export details) stored in a session's model."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise SegkitError(path, f"ONNX model has no {METADATA_KEY!r} metadata; export it with `segkit export`")
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise SegkitError(path, f"{METADATA_KEY!r} metadata is not valid JSON ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != ONNX_FORMAT:
        raise SegkitError(path, f"{METADATA_KEY!r} metadata is not a {ONNX_FORMAT} description")
    if metadata.get("version", 0) > ONNX_FORMAT_VERSION:
        raise SegkitError(path, f"ONNX metadata version {metadata['version']} is newer than this segkit")
    return metadata


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
