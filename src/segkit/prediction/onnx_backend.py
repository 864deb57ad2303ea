"""The ONNX Runtime backend: an exported ``.onnx`` file, numpy arrays, no PyTorch.

:class:`OnnxBackend` hands the normalised ``(N, 3, H, W)`` batch to an ONNX
Runtime session; the :class:`~segkit.prediction.predictor.Predictor` does
everything around the network with the same code as for the PyTorch backend
(:mod:`segkit.prediction.arrays`). The model card and the export details come
from the JSON the exporter stores in the file's ``metadata_props`` (see
:mod:`segkit.exporters.onnx`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from segkit.checkpoint import ModelCard
from segkit.data.transforms import PreprocessConfig
from segkit.device import check_device_name
from segkit.errors import SegkitError
from segkit.prediction.arrays import NumpyOps
from segkit.prediction.backend import Backend

logger = logging.getLogger(__name__)

METADATA_KEY = "segkit"
ONNX_FORMAT = "segkit-onnx"
ONNX_FORMAT_VERSION = 2
ONNX_INSTALL_HINT = "pip install 'segkit[onnx]'"


def onnx_providers(device: str) -> list[Any]:
    """ONNX Runtime execution providers for a device name: CUDA when asked for (or ``auto``) and installed, then CPU."""
    import onnxruntime as ort

    if device.startswith(("cuda", "auto")) and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBackend(Backend):
    """An exported segkit network in an ONNX Runtime session: normalised images in, logits out.

    Args:
        path: ``.onnx`` file written by ``segkit export``.
        device: ``auto``, ``cpu``, ``cuda[:N]``: ONNX Runtime's CUDA provider when it is
            installed (``onnxruntime-gpu``), else the CPU.

    Attributes:
        metadata: the description stored at export (``card`` and ``export`` details).
        card: the model card stored at export.
        device: ``"cuda:N"`` with the CUDA provider, else ``"cpu"``.
        providers: the session's execution providers.
        model: the ONNX Runtime session.

    Raises:
        SegkitError: onnxruntime missing, not a readable ONNX file, or one without segkit metadata.
    """

    ops = NumpyOps

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        self.path = Path(path)
        requested = check_device_name(device)
        try:
            import onnxruntime as ort
        except ImportError:
            raise SegkitError(self.path, f"running ONNX models needs onnxruntime: {ONNX_INSTALL_HINT}") from None
        if not self.path.is_file():
            raise SegkitError(self.path, "ONNX model not found")
        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: failures surface as SegkitErrors with ORT's message
        try:
            self.model = ort.InferenceSession(str(self.path), options, providers=onnx_providers(requested))
        except Exception as error:  # onnxruntime raises its own, unexported exception types
            raise SegkitError(self.path, f"not a readable ONNX model ({first_line(error)})") from None
        self.providers = self.model.get_providers()
        on_gpu = "CUDAExecutionProvider" in self.providers
        self.device = (requested if ":" in requested else "cuda:0") if on_gpu else "cpu"
        if requested not in ("auto", "cpu") and not on_gpu:
            logger.warning("onnxruntime has no provider for %s; running %s on the CPU", requested, self.path.name)
        self.metadata = read_metadata(self.model, self.path)
        # version 1 files hold the card's fields at the top level of the metadata
        self.card = ModelCard.from_dict(self.metadata.get("card", self.metadata), self.path)
        model_input = self.model.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape: list[int | str] = list(model_input.shape)

    def prepare(self, images: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
        scale = 1.0 / (255.0 * np.asarray(preprocess.std, np.float32))
        shift = -np.asarray(preprocess.mean, np.float32) / np.asarray(preprocess.std, np.float32)
        normalised = images.astype(np.float32) * scale + shift  # (x / 255 - mean) / std
        return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))

    def forward(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        self._check_size(images.shape)
        batch = self.input_shape[0]
        if isinstance(batch, int) and images.shape[0] != batch:
            # exported with a fixed batch: run the images one batch of that size at a time
            return np.concatenate([self._run(images[i : i + batch]) for i in range(0, len(images), batch)])
        return self._run(images)

    def _run(self, images: np.ndarray) -> np.ndarray:
        try:
            logits = self.model.run(None, {self.input_name: images})[0]
        except Exception as error:  # onnxruntime raises its own, unexported exception types
            problem = f"ONNX Runtime failed on input {list(images.shape)}: {first_line(error)}"
            raise SegkitError(self.path, problem) from None
        return logits.astype(np.float32, copy=False)

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
    version = metadata.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise SegkitError(path, f"{METADATA_KEY!r} metadata version must be an integer, got {version!r}")
    if version > ONNX_FORMAT_VERSION:
        raise SegkitError(path, f"ONNX metadata version {version} is newer than this segkit")
    return metadata


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
