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
network -- the model card (:class:`~segkit.checkpoint.ModelCard`) and the export
details (exporter, opset, dynamic axes) -- is stored as one JSON string under the
``segkit`` key of the model's ``metadata_props``.

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
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkit.checkpoint import Checkpoint, ModelCard, load_checkpoint
from segkit.errors import SegkitError
from segkit.exporters.options import EXPORTERS, ExportOptions
from segkit.files import atomic_write
from segkit.prediction.onnx_backend import (
    METADATA_KEY,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    OnnxBackend,
    first_line,
)
from segkit.prediction.predictor import Predictor

logger = logging.getLogger(__name__)

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
    checkpoint: str | Path | Checkpoint,
    out: str | Path,
    *,
    opset: int = ExportOptions.opset,
    dynamic: bool = True,
    exporter: str = "auto",
    tolerance: float = 1e-3,
    overwrite: bool = False,
) -> ExportResult:
    """Export a segkit checkpoint to an ONNX file that ``segkit predict`` and ``segkit.load`` accept.

    Args:
        checkpoint: a ``.pt`` checkpoint path or a loaded :class:`~segkit.checkpoint.Checkpoint`.
        out: the ``.onnx`` file to write.
        opset: ONNX opset of the default domain.
        dynamic: free batch, height and width; else fixed ``1 x 3 x img_size``.
        exporter: ``"dynamo"`` (torch.export, opset >= 18), ``"torchscript"`` (the legacy
            tracer, any opset it supports) or ``"auto"``: dynamo for opset >= 18, falling
            back to torchscript when torch.export cannot capture the model or its graph
            fails the checks.
        tolerance: largest accepted logit difference, relative to ``max(1, max |logit|)``.
        overwrite: replace an existing ``out``.

    Returns:
        The written file, its opset and exporter, and the measured logit difference.

    Raises:
        SegkitError: bad checkpoint or options, an existing ``out``, a failed export or
            check, or ONNX Runtime logits that differ from PyTorch; nothing is written then.
    """
    out = Path(out)
    try:
        import onnx  # noqa: F401  (needed by both exporters and the checks)
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise SegkitError(None, f"ONNX export needs {error.name}: pip install 'segkit[export]'") from None
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
    loaded = load_checkpoint(source) if source is not None else checkpoint
    try:
        predictor = Predictor.from_checkpoint(loaded, device="cpu")
    except SegkitError as error:
        raise SegkitError(source, error.problem) from None
    job = _ExportJob(predictor, source, out, opset, dynamic, tolerance)
    if exporter == "auto":
        candidates = ["dynamo", "torchscript"] if opset >= MIN_DYNAMO_OPSET else ["torchscript"]
    else:
        candidates = [exporter]
    results: list[ExportResult] = []
    atomic_write(out, lambda temp: results.append(job.run_first(candidates, temp)))
    result = replace(results[0], path=out, size_bytes=out.stat().st_size)
    if result.opset != opset:
        logger.warning("asked for opset %d; the %s exporter wrote opset %d", opset, result.exporter, result.opset)
    return result


def _example_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Sides that are not multiples of ``stride``, differ from each other and exceed 3 (batch, channels)."""
    sides = [stride * max(4, math.ceil(side / stride)) + 1 for side in (height, width)]
    if sides[0] == sides[1]:
        sides[1] += stride
    return sides[0], sides[1]


def _parity_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Parity input sides other than the example's: a multiple of ``stride`` and an odd one."""
    return stride * max(1, round(0.75 * height / stride)), stride * max(1, round(1.25 * width / stride)) + 3


class _ExportJob:
    """One checkpoint's export: the example input, the parity inputs, and one attempt per exporter."""

    def __init__(
        self,
        predictor: Predictor,
        source: Path | None,
        out: Path,
        opset: int,
        dynamic: bool,
        tolerance: float,
    ) -> None:
        self.predictor, self.source, self.out = predictor, source, out
        self.model: nn.Module = predictor.model
        self.opset, self.dynamic, self.tolerance = opset, dynamic, tolerance
        channels = predictor.card.model.in_channels
        height, width = predictor.preprocess.img_size
        stride = int(getattr(self.model, "stride", 1))
        if dynamic:
            self.example = (2, channels, *_example_size(height, width, stride))
            self.checks = [(1, channels, height, width), (3, channels, *_parity_size(height, width, stride))]
        else:
            self.example = (1, channels, height, width)
            self.checks = [self.example]

    def run_first(self, exporters: list[str], path: Path) -> ExportResult:
        """:meth:`run` each exporter in turn until one passes every check."""
        for attempt, exporter in enumerate(exporters):
            try:
                return self.run(exporter, path)
            except SegkitError as error:
                if attempt < len(exporters) - 1:
                    logger.warning("%s exporter: %s; trying %s", exporter, error.problem, exporters[attempt + 1])
                elif self.dynamic:
                    raise SegkitError(
                        error.path,
                        f"{error.problem} (layers tied to the input size, such as "
                        "adaptive pooling, may export only with --no-dynamic)",
                    ) from None
                else:
                    raise
        raise ValueError("no exporter to run")

    def run(self, exporter: str, path: Path) -> ExportResult:
        """Export with ``exporter`` into ``path``, add the metadata, validate, compare with PyTorch."""
        sample = torch.randn(self.example, generator=torch.Generator().manual_seed(PARITY_SEED))
        try:
            if exporter == "dynamo":
                with _quiet_exporter_logs():
                    export_with_dynamo(self.model, path, sample, self.opset, self.dynamic)
            else:
                export_with_torchscript(self.model, path, sample, self.opset, self.dynamic)
        except Exception as error:  # the exporters raise many unrelated types for code they cannot convert
            raise SegkitError(self.source, f"{exporter} ONNX export failed: {first_line(error)}") from None
        opset = _finish(path, _metadata(self.predictor.card, exporter, self.dynamic), self.source)
        difference, input_shape = self._parity(path)
        return ExportResult(path, opset, exporter, input_shape, difference, list(self.checks))

    def _parity(self, path: Path) -> tuple[float, list[int | str]]:
        """Largest logit difference between ONNX Runtime (CPU) and PyTorch over random inputs of the check shapes."""
        runtime = OnnxBackend(path, "cpu")
        generator = torch.Generator().manual_seed(PARITY_SEED + 1)
        worst = 0.0
        for shape in self.checks:
            images = torch.randn(shape, generator=generator)
            with torch.inference_mode():
                expected = self.model(images).float()
            got = torch.from_numpy(runtime.forward(images.numpy()))
            if got.shape != expected.shape:
                raise SegkitError(
                    self.out,
                    f"ONNX Runtime gives logits {list(got.shape)} for input {list(shape)}, "
                    f"PyTorch {list(expected.shape)}",
                )
            difference = float((got - expected).abs().max())
            if difference > self.tolerance * max(1.0, float(expected.abs().max())):
                raise SegkitError(
                    self.out, f"ONNX Runtime logits differ from PyTorch by {difference:.3g} on input {list(shape)}"
                )
            worst = max(worst, difference)
        return worst, runtime.input_shape


def export_with_dynamo(model: nn.Module, path: Path, sample: torch.Tensor, opset: int, dynamic: bool) -> None:
    """Write ``model`` to ``path`` through ``torch.onnx.export(dynamo=True)`` (opset 18 and later)."""
    # Axis names (not named torch.export.Dim objects, which reject the padding arithmetic)
    # become Dim.DYNAMIC and are written into the graph as the dimension names.
    dynamic_shapes = (DYNAMIC_AXES,) if dynamic else None
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
        external_data=False,
        verbose=False,
    )


def export_with_torchscript(model: nn.Module, path: Path, sample: torch.Tensor, opset: int, dynamic: bool) -> None:
    """Write ``model`` to ``path`` through the TorchScript-based exporter (older opsets; the fallback)."""
    axes = {INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES} if dynamic else None
    with warnings.catch_warnings(), _discard_native_output():
        # The deprecation notice, and tracer warnings about shape branches: the example
        # size makes them take the general path, and the parity check proves the result.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=False,
            dynamic_axes=axes,
            do_constant_folding=True,
        )


@contextlib.contextmanager
def _discard_native_output() -> Iterator[None]:
    """Discard what native code prints: the TorchScript exporter dumps its whole graph on failure."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as devnull:
            for fd in saved:
                os.dup2(devnull.fileno(), fd)
            yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


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


def _metadata(card: ModelCard, exporter: str, dynamic: bool) -> dict[str, Any]:
    """What the file carries besides the graph: the model card and how it was exported."""
    return {
        "format": ONNX_FORMAT,
        "version": ONNX_FORMAT_VERSION,
        "card": card.to_dict(),
        "export": {"exporter": exporter, "dynamic": dynamic, "input": INPUT_NAME, "output": OUTPUT_NAME},
    }


def _finish(path: Path, metadata: dict[str, Any], source: Path | None) -> int:
    """Store the metadata (with the file's real opset), validate, save; returns the opset."""
    import onnx

    proto = onnx.load(str(path))
    opset = next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))
    metadata["export"]["opset"] = opset
    kept = [entry for entry in proto.metadata_props if entry.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    card = metadata["card"]
    preprocess = card["preprocess"]
    proto.doc_string = (
        f"segkit {card['model']['name']}: classes {', '.join(card['classes'])}. Input '{INPUT_NAME}' "
        f"float32 (N, 3, H, W) RGB as (pixel / 255 - mean) / std with mean {preprocess['mean']}, std "
        f"{preprocess['std']}, resized by '{preprocess['resize']}' to {preprocess['img_size']}; output "
        f"'{OUTPUT_NAME}' (N, C, H, W). Full description: metadata_props['{METADATA_KEY}']."
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise SegkitError(source, f"exported ONNX graph is invalid: {first_line(error)}") from None
    onnx.save(proto, str(path))
    return opset
