"""Static int8 quantization of an exported model, kept only when its mIoU holds.

ONNX Runtime's tools do the quantization (``onnxruntime.quantization``: static,
QDQ format, int8 weights per output channel, uint8 activations with MinMax
ranges). Calibration feeds the network exactly what prediction feeds it: the
calibration images go through a :class:`~segkit.prediction.predictor.Predictor`
whose backend records its inputs (resize policy, normalisation, tiling windows).
Then the fp32 and the int8 model are both scored on the data's labelled images
(mIoU at each image's original size, :func:`segkit.evaluation.evaluate.evaluate_predictor`);
both figures go into the int8 file's metadata (``export.quantization``, beside the
model card) and the command's output, and a drop larger than ``max_drop`` refuses
the model (or, with ``force``, warns and keeps it).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from segkit.checkpoint import load_checkpoint
from segkit.data.transforms import PreprocessConfig
from segkit.errors import SegkitError
from segkit.exporters.options import ExportOptions
from segkit.files import atomic_write
from segkit.prediction.backend import Backend
from segkit.prediction.onnx_backend import METADATA_KEY, OnnxBackend, first_line
from segkit.prediction.predictor import Predictor

logger = logging.getLogger(__name__)

# Network inputs kept for calibration at most (float32 bytes): large crop-policy images stop it early.
CALIBRATION_BUDGET_BYTES = 512 * 2**20


@dataclass(frozen=True)
class QuantizationResult:
    """The int8 model written and how it compares with the fp32 one.

    Attributes:
        path: the int8 ``.onnx`` file.
        fp32_miou: mIoU of the fp32 model on the evaluation images.
        int8_miou: mIoU of the int8 model on the same images.
        images: images evaluated.
        calibration_images: images whose network inputs calibrated the activation ranges.
        max_drop: the largest accepted drop, of the mIoU and of every class's IoU.
        class_drops: fp32 - int8 IoU of each class scored by both.
        size_bytes: size of the int8 file.
    """

    path: Path
    fp32_miou: float
    int8_miou: float
    images: int
    calibration_images: int
    max_drop: float
    class_drops: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0

    @property
    def drop(self) -> float:
        return self.fp32_miou - self.int8_miou

    def refusal(self) -> str | None:
        """Why the int8 model falls short (the mIoU, or one class, dropping more than ``max_drop``), or None."""
        if not self.drop <= self.max_drop:  # NaN counts as over
            return (
                f"int8 mIoU {self.int8_miou:.4f} is {self.drop:.4f} below fp32 {self.fp32_miou:.4f} "
                f"(more than --max-drop {self.max_drop})"
            )
        over = {name: drop for name, drop in self.class_drops.items() if drop > self.max_drop}
        if over:
            name = max(over, key=lambda key: over[key])
            return (
                f"int8 IoU of class {name!r} is {over[name]:.4f} below fp32's (more than --max-drop {self.max_drop}"
                + (f"; {len(over) - 1} other classes too" if len(over) > 1 else "")
                + ")"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        """The ``export.quantization`` metadata entry."""
        return {
            "type": "int8",
            "format": "QDQ",
            "weights": "int8 per channel",
            "activations": "uint8 MinMax",
            "calibration_images": self.calibration_images,
            "evaluation_images": self.images,
            "fp32_mIoU": round(self.fp32_miou, 6),
            "int8_mIoU": round(self.int8_miou, 6),
            "mIoU_drop": round(self.drop, 6),
            "largest_class_drop": round(max(self.class_drops.values(), default=0.0), 6),
            "max_drop": self.max_drop,
        }

    def format(self) -> str:
        """Lines for the command line."""
        verdict = "within" if self.refusal() is None else "OVER"
        worst = max(self.class_drops.values(), default=0.0)
        return (
            f"wrote {self.path} (int8, {self.size_bytes / 2**20:.1f} MiB; calibrated on {self.calibration_images} "
            f"images)\nmIoU on {self.images} images: fp32 {self.fp32_miou:.4f}, int8 {self.int8_miou:.4f}, "
            f"drop {self.drop:+.4f}, largest class drop {worst:+.4f} ({verdict} --max-drop {self.max_drop})"
        )


class RecordingBackend(Backend):
    """A backend that runs another and keeps a copy of every network input, up to a byte budget."""

    def __init__(self, backend: Backend, budget_bytes: int = CALIBRATION_BUDGET_BYTES) -> None:
        self.inner, self.budget = backend, budget_bytes
        self.ops, self.device, self.model = backend.ops, backend.device, backend.model
        self.inputs: list[np.ndarray] = []

    def prepare(self, images: np.ndarray, preprocess: PreprocessConfig) -> Any:
        return self.inner.prepare(images, preprocess)

    def forward(self, images: Any) -> Any:
        array = np.ascontiguousarray(self.ops.to_numpy(images), dtype=np.float32)
        if sum(item.nbytes for item in self.inputs) + array.nbytes <= self.budget:
            self.inputs.extend(array[index : index + 1] for index in range(len(array)))
        return self.inner.forward(images)


def calibration_reader(inputs: list[np.ndarray], input_name: str) -> Any:
    """An ONNX Runtime ``CalibrationDataReader`` over the recorded network inputs."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """The recorded network inputs, one image (or window) at a time."""

        def __init__(self) -> None:
            self.remaining = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.remaining, None)
            return None if item is None else {input_name: item}

    return Reader()


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread over ``range(count)`` (all of them when there are fewer)."""
    if count <= wanted:
        return list(range(count))
    return sorted({int((k + 0.5) * count / wanted) for k in range(wanted)})


def quantize_onnx(
    model: str | Path,
    out: str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    calibration_images: int = ExportOptions.calibration_images,
    max_drop: float = ExportOptions.max_drop,
    force: bool = False,
    overwrite: bool = False,
    export_options: dict[str, Any] | None = None,
    **read: Any,
) -> QuantizationResult:
    """Quantize a model to int8, calibrated and checked on ``data``.

    Args:
        model: an fp32 ``.onnx`` model from ``segkit export``, or a ``.pt`` checkpoint
            (exported first, with ``export_options``, into a temporary file).
        out: the int8 ``.onnx`` file to write.
        data: dataset folder with masks (any layout ``segkit train`` reads): its images
            calibrate the activation ranges and score both models.
        split: the split of ``data`` (default: as ``segkit evaluate`` chooses it).
        calibration_images: images (evenly spaced by name) used for calibration.
        max_drop: largest accepted fp32 - int8 mIoU difference.
        force: keep a model whose mIoU dropped more (with a warning).
        overwrite: replace an existing ``out``.
        export_options: :func:`segkit.exporters.onnx.export_onnx` options for a ``.pt`` checkpoint.
        **read: how to read ``data``, as ``segkit evaluate`` (``masks``, ``colors``, ``classes``,
            ``images``, ``roi_masks``, ``fit_masks``, ``label_map``).

    Raises:
        SegkitError: missing tools, unreadable model or data, a failed quantization, or an
            mIoU drop over ``max_drop`` without ``force``; nothing is written then.
    """
    try:
        import onnxruntime.quantization  # noqa: F401  (checked before anything slow runs)
    except ImportError as error:
        raise SegkitError(None, f"quantization needs {error.name}: pip install 'segkit[export]'") from None
    model, out = Path(model), Path(out)
    if out.suffix.lower() != ".onnx":
        raise SegkitError(out, "the ONNX file name must end in .onnx")
    if out.exists() and not overwrite:
        raise SegkitError(out, "already exists; pass --overwrite to replace it")
    ExportOptions(quantize="int8", calibration=data, calibration_images=calibration_images, max_drop=max_drop)  # checks
    from segkit.evaluation.evaluate import open_evaluation_source

    card = OnnxBackend(model, "cpu").card if model.suffix.lower() == ".onnx" else load_checkpoint(model).card
    # the calibration data is read before the (slow) fp32 export: a wrong folder fails at once
    source = open_evaluation_source(data, split, card.ignore_index, **read)
    with tempfile.TemporaryDirectory(prefix="segkit-quantize-") as work:
        if model.suffix.lower() != ".onnx":
            from segkit.exporters.onnx import export_onnx

            exported = export_onnx(model, Path(work) / "fp32.onnx", **(export_options or {}))
            logger.info(
                "exported the fp32 model (%s exporter, opset %d; max |logit difference| vs PyTorch %.3g)",
                exported.exporter,
                exported.opset,
                exported.max_abs_diff,
            )
            model = exported.path
        result = _quantize(
            model,
            out,
            source,
            Path(work),
            data=data,
            calibration_images=calibration_images,
            max_drop=max_drop,
            force=force,
        )
    return replace(result, size_bytes=out.stat().st_size)


def _quantize(
    model: Path,
    out: Path,
    source: Any,
    work: Path,
    *,
    data: str | Path,
    calibration_images: int,
    max_drop: float,
    force: bool,
) -> QuantizationResult:
    """Calibrate on and score with ``source``, quantize, write ``out`` (see :func:`quantize_onnx`)."""
    import onnxruntime.quantization as quant
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from segkit.evaluation.evaluate import evaluate_predictor

    fp32 = OnnxBackend(model, "cpu")
    if "quantization" in fp32.metadata.get("export", {}):
        raise SegkitError(model, "is already quantized; quantize the fp32 export")
    recorder = RecordingBackend(fp32)
    chosen = evenly_spaced(len(source), calibration_images)
    Predictor(recorder, fp32.card).predict_batch([source.load(index).image for index in chosen])
    logger.info("calibrating on %d network inputs from %d images of %s", len(recorder.inputs), len(chosen), data)

    prepared, quantized = work / "prepared.onnx", work / "int8.onnx"
    try:
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quant.quantize_static(
            str(prepared),
            str(quantized),
            calibration_reader(recorder.inputs, fp32.input_name),
            quant_format=quant.QuantFormat.QDQ,
            per_channel=True,
            weight_type=quant.QuantType.QInt8,
            activation_type=quant.QuantType.QUInt8,
            calibrate_method=quant.CalibrationMethod.MinMax,
        )
    except Exception as error:  # the quantization tools raise many unrelated types
        raise SegkitError(model, f"int8 quantization failed: {first_line(error)}") from None
    fp32_metrics = evaluate_predictor(Predictor(fp32, fp32.card), source, source_name=data)
    int8_metrics = evaluate_predictor(Predictor.from_checkpoint(quantized, device="cpu"), source, source_name=data)
    result = QuantizationResult(
        out,
        _miou(fp32_metrics),
        _miou(int8_metrics),
        len(source),
        len(chosen),
        max_drop,
        class_drops(fp32_metrics, int8_metrics),
    )
    message = result.refusal()
    if message is not None:
        if not force:
            raise SegkitError(out, f"{message}; nothing written (pass --force to keep it anyway)")
        logger.warning("%s; kept because of --force", message)
    _store_quantization(quantized, result)
    atomic_write(out, lambda temp: temp.write_bytes(quantized.read_bytes()))
    return result


def class_drops(fp32: dict[str, Any], int8: dict[str, Any]) -> dict[str, float]:
    """fp32 - int8 IoU of each class both metrics score (a class absent from the images has no IoU)."""
    drops = {}
    for name, values in fp32["per_class"].items():
        before, after = values.get("iou"), int8["per_class"].get(name, {}).get("iou")
        if before is not None and after is not None and not (math.isnan(before) or math.isnan(after)):
            drops[name] = float(before) - float(after)
    return drops


def _miou(metrics: dict[str, Any]) -> float:
    value = metrics["mIoU"]
    return math.nan if value is None else float(value)


def _store_quantization(path: Path, result: QuantizationResult) -> None:
    """Add the ``export.quantization`` entry to the segkit metadata of the model at ``path``."""
    import onnx

    proto = onnx.load(str(path))
    entries = {entry.key: entry for entry in proto.metadata_props}
    metadata = json.loads(entries[METADATA_KEY].value)
    metadata.setdefault("export", {})["quantization"] = result.to_dict()
    entries[METADATA_KEY].value = json.dumps(metadata)
    onnx.save(proto, str(path))
