"""Export a checkpoint to ONNX, with its preprocessing inside, checked against PyTorch.

The graph maps a normalised float32 ``image`` ``(N, 3, H, W)`` to ``logits``
``(N, C, H, W)``; with ``dynamic=True`` (the default) N, H and W are free
(named ``batch``, ``height``, ``width``). The models pad their input to their
stride inside ``forward``; both exporters record that padding for whatever size
the example input has, so the example's sides are chosen *not* to be multiples
of the stride (otherwise the "no padding needed" branch would be baked in) and
differ from each other and from the batch and channel counts (torch.export
would otherwise treat equal sizes as one symbol).

Everything :class:`~segkit.prediction.predictor.Predictor` needs besides the
network (classes, palette, binary/threshold, ignore index, preprocess, model
name and options, segkit version, opset) is stored as one JSON string under
the ``segkit`` key of the model's ``metadata_props``.

The file is validated with ``onnx.checker`` (full check, with shape
inference) and ONNX Runtime's logits are compared with PyTorch's on random
inputs of other sizes and batch sizes than the example; it is renamed into
place only when all of that passed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkit.data.io import atomic_write
from segkit.errors import SegkitError
from segkit.prediction.onnx_backend import METADATA_KEY, ONNX_FORMAT, ONNX_FORMAT_VERSION, OnnxRuntimeModel
from segkit.prediction.predictor import Predictor
from segkit.training.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = 18
# The torch.export-based exporter emits opset 18 and cannot convert down (no Pad adapter).
MIN_DYNAMO_OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
PARITY_SEED = 0
# Libraries that log every optimisation pass at INFO during a dynamo export.
CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how well ONNX Runtime reproduces PyTorch.

    Attributes:
        path: the ``.onnx`` file.
        opset: the default-domain opset the file declares.
        exporter: ``"dynamo"`` (torch.export) or ``"torchscript"``.
        input_shape: the graph input's shape (names for dynamic axes).
        max_abs_diff: largest ``|logit_onnxruntime - logit_torch|`` over the checked inputs.
        checked_shapes: input shapes of the parity check.
        size_bytes: file size.
    """

    path: Path
    opset: int
    exporter: str
    input_shape: list[int | str]
    max_abs_diff: float
    checked_shapes: list[tuple[int, ...]] = field(default_factory=list)
    size_bytes: int = 0

    def format(self) -> str:
        """One line for the command line."""
        shapes = ", ".join("x".join(map(str, shape)) for shape in self.checked_shapes)
        return (
            f"wrote {self.path} ({self.size_bytes / 2**20:.1f} MiB, opset {self.opset}, {self.exporter} exporter, "
            f"input {self.input_shape}); max |logit difference| ONNX Runtime vs PyTorch: "
            f"{self.max_abs_diff:.3g} on {shapes}"
        )


def export_onnx(
    checkpoint: str | Path | dict[str, Any],
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    exporter: str = "auto",
    tolerance: float = 1e-3,
    overwrite: bool = False,
) -> ExportResult:
    """Export a segkit checkpoint to an ONNX file that ``segkit predict`` and ``segkit.load`` accept.

    Args:
        checkpoint: a ``.pt`` checkpoint path or a loaded checkpoint dict.
        out: the ``.onnx`` file to write.
        opset: ONNX opset of the default domain.
        dynamic: free batch, height and width; else fixed ``1 x 3 x img_size``.
        exporter: ``"dynamo"`` (torch.export, opset >= 18), ``"torchscript"`` (the legacy
            tracer, any opset it supports) or ``"auto"``: dynamo for opset >= 18, falling
            back to torchscript when torch.export cannot capture the model.
        tolerance: largest accepted logit difference, relative to ``max(1, max |logit|)``.
        overwrite: replace an existing ``out``.

    Returns:
        The written file, its opset and exporter, and the measured logit difference.

    Raises:
        SegkitError: bad checkpoint or options, an existing ``out``, a failed export or
            check, or ONNX Runtime logits that differ from PyTorch; nothing is written then.
    """
    out = Path(out)
    if exporter not in EXPORTERS:
        raise SegkitError(None, f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if exporter == "dynamo" and opset < MIN_DYNAMO_OPSET:
        raise SegkitError(None, f"the dynamo exporter writes opset {MIN_DYNAMO_OPSET} or newer, not {opset}")
    if out.suffix.lower() != ".onnx":
        raise SegkitError(out, "the ONNX file name must end in .onnx")
    if out.exists() and not overwrite:
        raise SegkitError(out, "already exists; pass --overwrite to replace it")
    source = Path(checkpoint) if isinstance(checkpoint, (str, Path)) else None
    if source is not None and source.suffix.lower() == ".onnx":
        raise SegkitError(source, "is already an ONNX model; export a .pt checkpoint")
    state = load_checkpoint(source) if source is not None else checkpoint
    predictor = Predictor.from_checkpoint(state, device="cpu")
    model = predictor.model
    channels = int(state["model"].get("in_channels", 3))
    height, width = predictor.preprocess.img_size
    stride = int(getattr(model, "stride", 1))
    if dynamic:
        example = (2, channels, *_example_size(height, width, stride))
        checks = [(1, channels, height, width), (3, channels, *_check_size(height, width, stride))]
    else:
        example = (1, channels, height, width)
        checks = [example]
    written: dict[str, Any] = {}

    def write(temp: Path) -> None:
        used = _export(model, temp, example, opset, dynamic, exporter, source)
        written["opset"] = _finish(temp, _metadata(state, predictor, used, dynamic), source)
        written["exporter"] = used
        written["diff"], written["input_shape"] = _parity(model, temp, checks, tolerance, out)

    atomic_write(out, write)
    if written["opset"] != opset:
        logger.warning("asked for opset %d; the %s exporter wrote opset %d", opset, written["exporter"], written["opset"])
    return ExportResult(
        path=out,
        opset=written["opset"],
        exporter=written["exporter"],
        input_shape=written["input_shape"],
        max_abs_diff=written["diff"],
        checked_shapes=checks,
        size_bytes=out.stat().st_size,
    )


def _example_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Sides that are not multiples of ``stride``, differ from each other and exceed 3 (batch, channels)."""
    sides = [stride * max(4, math.ceil(side / stride)) + 1 for side in (height, width)]
    if sides[0] == sides[1]:
        sides[1] += stride
    return sides[0], sides[1]


def _check_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Parity input sides other than the example's: a multiple of ``stride`` and an odd one."""
    return stride * max(1, round(0.75 * height / stride)), stride * max(1, round(1.25 * width / stride)) + 3


def _export(
    model: nn.Module, path: Path, example: tuple[int, ...], opset: int, dynamic: bool, exporter: str, source: Path | None
) -> str:
    """Run the chosen exporter into ``path``; returns the one used."""
    sample = torch.randn(example, generator=torch.Generator().manual_seed(PARITY_SEED))
    if exporter in ("auto", "dynamo") and opset >= MIN_DYNAMO_OPSET:
        try:
            with _quiet_exporter_logs():
                _export_dynamo(model, path, sample, opset, dynamic)
            return "dynamo"
        except Exception as error:  # torch.export raises many unrelated types for uncapturable code
            if exporter == "dynamo":
                raise SegkitError(source, f"dynamo ONNX export failed: {_first_line(error)}") from None
            logger.warning("torch.export could not capture the model (%s); using the TorchScript exporter",
                           _first_line(error))
    try:
        _export_torchscript(model, path, sample, opset, dynamic)
    except Exception as error:  # the tracer and symbolic functions raise many unrelated types
        raise SegkitError(source, f"TorchScript ONNX export failed: {_first_line(error)}") from None
    return "torchscript"


def _export_dynamo(model: nn.Module, path: Path, sample: torch.Tensor, opset: int, dynamic: bool) -> None:
    # Axis names (not named torch.export.Dim objects, which reject the padding arithmetic)
    # become Dim.DYNAMIC and are written into the graph as the dimension names.
    dynamic_shapes = (DYNAMIC_AXES,) if dynamic else None
    torch.onnx.export(
        model, (sample,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
        dynamo=True, dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
    )


def _export_torchscript(model: nn.Module, path: Path, sample: torch.Tensor, opset: int, dynamic: bool) -> None:
    axes = {INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES} if dynamic else None
    with warnings.catch_warnings():
        # The deprecation notice, and tracer warnings about shape branches: the example
        # size makes them take the general path, and the parity check proves the result.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model, (sample,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=False, dynamic_axes=axes, do_constant_folding=True,
        )


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Show the exporter libraries' INFO messages only when segkit itself logs at DEBUG (``-v``)."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(max(logging.WARNING, item.getEffectiveLevel()))
    try:
        yield
    finally:
        for item, level in zip(loggers, levels):
            item.setLevel(level)


def _metadata(state: dict[str, Any], predictor: Predictor, exporter: str, dynamic: bool) -> dict[str, Any]:
    """The checkpoint description stored in the file (checkpoint keys, without weights)."""
    import segkit

    spec = state["model"]
    return {
        "format": ONNX_FORMAT,
        "version": ONNX_FORMAT_VERSION,
        "segkit_version": segkit.__version__,
        "model": {
            "name": spec["name"],
            "num_classes": spec["num_classes"],
            "in_channels": spec.get("in_channels", 3),
            "kwargs": dict(spec.get("kwargs", {})),
        },
        "classes": predictor.classes,
        "palette": predictor.palette[: predictor.num_classes].tolist(),
        "binary": predictor.binary,
        "threshold": predictor.threshold,
        "ignore_index": predictor.ignore_index,
        "preprocess": predictor.preprocess.to_dict(),
        "exporter": exporter,
        "dynamic": dynamic,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
    }


def _finish(path: Path, metadata: dict[str, Any], source: Path | None) -> int:
    """Store the metadata (with the file's real opset), validate, save; returns the opset."""
    import onnx

    proto = onnx.load(str(path))
    opset = next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))
    metadata["opset"] = opset
    kept = [entry for entry in proto.metadata_props if entry.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    preprocess = metadata["preprocess"]
    proto.doc_string = (
        f"segkit {metadata['model']['name']}: classes {', '.join(metadata['classes'])}. Input '{INPUT_NAME}' "
        f"float32 (N, 3, H, W) RGB as (pixel / 255 - mean) / std with mean {preprocess['mean']}, std "
        f"{preprocess['std']}, resized by '{preprocess['resize']}' to {preprocess['img_size']}; output "
        f"'{OUTPUT_NAME}' (N, C, H, W). Full description: metadata_props['{METADATA_KEY}']."
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise SegkitError(source, f"exported ONNX graph is invalid: {_first_line(error)}") from None
    onnx.save(proto, str(path))
    return opset


def _parity(
    model: nn.Module, path: Path, shapes: list[tuple[int, ...]], tolerance: float, out: Path
) -> tuple[float, list[int | str]]:
    """Largest logit difference between ONNX Runtime (CPU) and PyTorch over random inputs of ``shapes``."""
    runtime = OnnxRuntimeModel(path, "cpu")
    generator = torch.Generator().manual_seed(PARITY_SEED + 1)
    worst = 0.0
    for shape in shapes:
        images = torch.randn(shape, generator=generator)
        with torch.inference_mode():
            expected = model(images).float()
            got = runtime(images)
        if got.shape != expected.shape:
            raise SegkitError(out, f"ONNX Runtime returned {list(got.shape)} for input {list(shape)}, "
                                   f"PyTorch {list(expected.shape)}")
        difference = float((got - expected).abs().max())
        if difference > tolerance * max(1.0, float(expected.abs().max())):
            raise SegkitError(out, f"ONNX Runtime logits differ from PyTorch by {difference:.3g} on input "
                                   f"{list(shape)}; nothing written")
        worst = max(worst, difference)
    return worst, runtime.input_shape


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
