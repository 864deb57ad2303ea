"""``segkit export``: a checkpoint as an ONNX file, an int8 ONNX file or a Hugging-Face-style folder.

:func:`export` checks the options together and hands over to the format's exporter
(:mod:`segkit.exporters.onnx`, :mod:`segkit.exporters.quantize`, :mod:`segkit.exporters.hf`).
This module imports neither PyTorch nor ONNX, so the command line reads its choices and
defaults from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from segkit.errors import OptionError
from segkit.exporters.options import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_MAX_DROP,
    DEFAULT_OPSET,
    EXPORTERS,
    FORMATS,
    MIN_OPSET,
    QUANTIZE_CHOICES,
)

if TYPE_CHECKING:
    from segkit.exporters.hf import HubExport
    from segkit.exporters.onnx import ExportResult
    from segkit.exporters.quantize import QuantizationResult


AnyExport = Union["ExportResult", "QuantizationResult", "HubExport"]


def export(
    checkpoint: str | Path,
    out: str | Path,
    *,
    format: str = "onnx",
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    exporter: str = "auto",
    overwrite: bool = False,
    push_to_hub: str | None = None,
    quantize: str | None = None,
    calibration: str | Path | None = None,
    split: str | None = None,
    masks: str | None = None,
    colors: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
    images: str | None = None,
    roi_masks: str | None = None,
    fit_masks: bool = False,
    label_map: str | Path | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    max_drop: float = DEFAULT_MAX_DROP,
    force: bool = False,
) -> AnyExport:
    """Export a checkpoint to ONNX (optionally int8) or a Hugging-Face-style folder: ``segkit export``.

    The ONNX graph takes ``image`` (normalised float32 ``N x 3 x H x W``) and gives ``logits``,
    with classes, palette and preprocessing as JSON in its metadata; it is checked with
    ``onnx.checker`` and ONNX Runtime's logits are compared with PyTorch's before it is
    written. Every command and :func:`segkit.load` take the result as a model.

    Args:
        checkpoint: a trained ``.pt`` checkpoint, or an fp32 ``.onnx`` model with ``quantize``.
        out: the ``.onnx`` file, or the folder with ``format="hf"``.
        format: ``"onnx"``, or ``"hf"``: ``model.safetensors``, ``config.json`` (the model
            card) and a README model card.
        opset: ONNX opset (below 18: the torchscript exporter).
        dynamic: free batch, height and width; ``False`` fixes ``1 x 3 x img_size``.
        exporter: ``"dynamo"`` (torch.export), ``"torchscript"`` (the legacy tracer) or
            ``"auto"`` (dynamo, falling back to torchscript).
        overwrite: replace an existing ``out``.
        push_to_hub: with ``format="hf"``: also upload the folder to this Hugging Face Hub
            repository (needs ``huggingface_hub`` and a token: ``HF_TOKEN`` or ``hf auth login``).
        quantize: ``"int8"``: static quantization (ONNX Runtime, QDQ, per-channel int8
            weights) calibrated on ``calibration``.
        calibration: with ``quantize``: labelled dataset folder to calibrate and score on.
        split, masks, colors, classes, images, roi_masks, fit_masks: with ``quantize``: how ``calibration`` is read, as
            :func:`segkit.evaluate`'s.
        calibration_images: with ``quantize``: images calibrating the ranges.
        max_drop: with ``quantize``: refuse the int8 model when its mIoU is more than this
            below the fp32 model's.
        force: with ``quantize``: keep an int8 model over ``max_drop``, with a warning.

    Returns:
        What was written, with ``path`` and ``format()`` (the command's lines): an
        :class:`~segkit.exporters.onnx.ExportResult` (opset, exporter, the logit difference
        measured), a :class:`~segkit.exporters.quantize.QuantizationResult` (fp32 and int8
        mIoU) or a :class:`~segkit.exporters.hf.HubExport` (the folder, the Hub URL).

    Raises:
        OptionError: options that do not go together (the command line shows these with its usage).
        SegkitError: unreadable checkpoint, an existing ``out`` without ``overwrite``, a
            missing package, a failed export or check; nothing is written then.

    Example:
        >>> import segkit
        >>> print(segkit.export("runs/exp/best.pt", "model.onnx").format())
        >>> segkit.export("runs/exp/best.pt", "model-int8.onnx", quantize="int8", calibration="data/")
        >>> segkit.export("runs/exp/best.pt", "my-model/", format="hf")
    """
    quantize_options: dict[str, Any] = {
        "split": split,
        "masks": masks,
        "colors": colors,
        "classes": classes,
        "images": images,
        "roi_masks": roi_masks,
        "fit_masks": fit_masks,
        "label_map": label_map,
        "force": force,
    }
    onnx_options = {"--opset": opset != DEFAULT_OPSET, "--no-dynamic": not dynamic, "--exporter": exporter != "auto"}
    tuning = {
        "calibration_images": calibration_images != DEFAULT_CALIBRATION_IMAGES,
        "max_drop": max_drop != DEFAULT_MAX_DROP,
    }
    _check_options(
        format, opset, exporter, push_to_hub, quantize, calibration, {**quantize_options, **tuning}, onnx_options
    )
    export_options: dict[str, Any] = {"opset": opset, "dynamic": dynamic, "exporter": exporter}
    if quantize is not None:
        from segkit.exporters.quantize import quantize_onnx

        assert calibration is not None  # _check_options: --quantize comes with --calibration
        return quantize_onnx(
            checkpoint,
            out,
            calibration,
            calibration_images=calibration_images,
            max_drop=max_drop,
            overwrite=overwrite,
            export_options=export_options,
            **quantize_options,
        )
    if format == "hf":
        from segkit.exporters.hf import HubExport, export_hf
        from segkit.exporters.hf import push_to_hub as upload

        folder = export_hf(checkpoint, out, overwrite=overwrite)
        return HubExport(folder, upload(folder, push_to_hub) if push_to_hub else None)
    from segkit.exporters.onnx import export_onnx

    return export_onnx(checkpoint, out, overwrite=overwrite, **export_options)


def _check_options(
    format: str,
    opset: int,
    exporter: str,
    push_to_hub: str | None,
    quantize: str | None,
    calibration: Any,
    quantize_options: dict[str, Any],
    onnx_options: dict[str, bool],
) -> None:
    """The options of :func:`export` that do not go together (one line each, as the command says them).

    ``onnx_options`` says which ONNX-only options were set to other than their defaults.
    """
    for name, value, choices in (
        ("--format", format, FORMATS),
        ("--exporter", exporter, EXPORTERS),
        ("--quantize", quantize, (None, *QUANTIZE_CHOICES)),
    ):
        if value not in choices:
            raise OptionError(f"{name} must be one of {', '.join(map(str, filter(None, choices)))}, not {value!r}")
    if opset < MIN_OPSET:
        raise OptionError(f"--opset must be at least {MIN_OPSET}, not {opset}")
    quantizing = quantize is not None
    if quantizing != (calibration is not None):
        raise OptionError("--quantize and --calibration DATA go together")
    given = [name for name, value in quantize_options.items() if value]
    if given and not quantizing:
        raise OptionError(f"{', '.join('--' + name.replace('_', '-') for name in given)} only apply with --quantize")
    if push_to_hub and format != "hf":
        raise OptionError("--push-to-hub needs --format hf")
    onnx_only = [flag for flag, set_ in onnx_options.items() if set_]
    if format == "hf" and onnx_only:
        raise OptionError(f"{', '.join(onnx_only)} only apply to --format onnx (a Hugging-Face folder holds weights)")
    if quantizing and format != "onnx":
        raise OptionError("--quantize writes an ONNX model: use --format onnx")
