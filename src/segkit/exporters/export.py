"""``segkit export``: a checkpoint as an ONNX file, an int8 ONNX file or a Hugging-Face-style folder.

:func:`export` reads its options as :class:`~segkit.exporters.options.ExportOptions` (which
checks them) and hands over to the format's exporter (:mod:`segkit.exporters.onnx`,
:mod:`segkit.exporters.quantize`, :mod:`segkit.exporters.hf`). This module imports neither
PyTorch nor ONNX.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from segkit.data.options import ReadOptions
from segkit.exporters.options import ExportOptions

if TYPE_CHECKING:
    from segkit.exporters.hf import HubExport
    from segkit.exporters.onnx import ExportResult
    from segkit.exporters.quantize import QuantizationResult


AnyExport = Union["ExportResult", "QuantizationResult", "HubExport"]


def export(checkpoint: str | Path, out: str | Path, **options: Any) -> AnyExport:
    """Export a checkpoint to ONNX (optionally int8) or a Hugging-Face-style folder: ``segkit export``.

    The ONNX graph takes ``image`` (normalised float32 ``N x 3 x H x W``) and gives ``logits``,
    with classes, palette and preprocessing as JSON in its metadata; it is checked with
    ``onnx.checker`` and ONNX Runtime's logits are compared with PyTorch's before it is
    written. Every command and :func:`segkit.load` take the result as a model.

    Args:
        checkpoint: a trained ``.pt`` checkpoint, or an fp32 ``.onnx`` model with ``quantize``.
        out: the ``.onnx`` file, or the folder with ``format="hf"``.
        **options: the command's options, as :class:`~segkit.exporters.options.ExportOptions`
            declares them (with their defaults):

            - ``format="onnx"``, or ``"hf"``: ``model.safetensors``, ``config.json`` (the model
              card) and a README model card;
            - ``opset=18`` (below 18: the torchscript exporter); ``dynamic=True``: free batch,
              height and width (``False`` fixes ``1 x 3 x img_size``); ``exporter="auto"``:
              ``"dynamo"`` (torch.export), ``"torchscript"`` (the legacy tracer) or ``"auto"``
              (dynamo, falling back to torchscript);
            - ``overwrite=False``: replace an existing ``out``; ``push_to_hub``: with
              ``format="hf"``, also upload the folder to this Hugging Face Hub repository (needs
              ``huggingface_hub`` and a token: ``HF_TOKEN`` or ``hf auth login``);
            - ``quantize="int8"``: static quantization (ONNX Runtime, QDQ, per-channel int8
              weights) calibrated on ``calibration``, a labelled dataset folder, read with
              ``split``, ``classes`` and the read options (``masks``, ``colors``, ``images``,
              ``roi_masks``, ``fit_masks``, ``label_map``) as :func:`segkit.evaluate` reads
              data; ``calibration_images=64``: images calibrating the ranges;
              ``max_drop=0.01``: refuse the int8 model when its mIoU is more than this below
              the fp32 model's; ``force=False``: keep such a model, with a warning.

    Returns:
        What was written, with ``path`` and ``format()`` (the command's lines): an
        :class:`~segkit.exporters.onnx.ExportResult` (opset, exporter, the logit difference
        measured), a :class:`~segkit.exporters.quantize.QuantizationResult` (fp32 and int8
        mIoU) or a :class:`~segkit.exporters.hf.HubExport` (the folder, the Hub URL).

    Raises:
        OptionError: a value out of range, or options that do not go together (the command line
            shows these with its usage).
        SegkitError: unreadable checkpoint, an existing ``out`` without ``overwrite``, a
            missing package, a failed export or check; nothing is written then.

    Example:
        >>> import segkit
        >>> print(segkit.export("runs/exp/best.pt", "model.onnx").format())
        >>> segkit.export("runs/exp/best.pt", "model-int8.onnx", quantize="int8", calibration="data/")
        >>> segkit.export("runs/exp/best.pt", "my-model/", format="hf")
    """
    read = {item.name: options.pop(item.name) for item in fields(ReadOptions) if item.name in options}
    settings = ExportOptions(**options, read=ReadOptions(**read))
    if settings.quantize is not None:
        from segkit.exporters.quantize import quantize_onnx

        assert settings.calibration is not None  # ExportOptions: --quantize comes with --calibration
        return quantize_onnx(
            checkpoint,
            out,
            settings.calibration,
            split=settings.split,
            calibration_images=settings.calibration_images,
            max_drop=settings.max_drop,
            force=settings.force,
            overwrite=settings.overwrite,
            export_options=settings.onnx_options(),
            **settings.read_options(),
        )
    if settings.format == "hf":
        from segkit.exporters.hf import HubExport, export_hf
        from segkit.exporters.hf import push_to_hub as upload

        folder = export_hf(checkpoint, out, overwrite=settings.overwrite)
        return HubExport(folder, upload(folder, settings.push_to_hub) if settings.push_to_hub else None)
    from segkit.exporters.onnx import export_onnx

    return export_onnx(checkpoint, out, overwrite=settings.overwrite, **settings.onnx_options())
