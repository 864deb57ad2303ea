"""Every option of ``segkit export``, declared once (help, choices, defaults, checks); imports nothing heavy.

:class:`ExportOptions` is read by :func:`segkit.export` (its keywords) and by the command
line, which is generated from its fields; how ``--quantize``'s calibration data is read
(``--split``, ``--masks`` ...) is the shared :class:`~segkit.data.options.ReadOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from segkit.data.options import ReadOptions, classes_option
from segkit.errors import OptionError
from segkit.options import check_choices, option

FORMATS = ("onnx", "hf")
EXPORTERS = ("auto", "dynamo", "torchscript")
QUANTIZE_CHOICES = ("int8",)
MIN_OPSET = 7
QUANTIZE_GROUP = "int8 quantization"  # the help section of --quantize and its options


@dataclass(frozen=True)
class ExportOptions:
    """How a checkpoint is exported: ``segkit export``'s options by their keyword names (checked when made).

    Each field with help is also the command's option. ``split`` and ``read`` say how the
    ``--quantize`` calibration data is read (the command line's shared data options).

    Raises:
        OptionError: a value out of range or not among the choices, or options that do not go together.
    """

    format: str = option("onnx", help="export format: onnx or hf", choices=FORMATS)
    opset: int = option(18, help="ONNX opset; below 18 uses torchscript", parse=int)
    dynamic: bool = option(True, help="free batch, height and width; --no-dynamic fixes 1 x 3 x img_size", parse=bool)
    exporter: str = option(
        "auto",
        help="torch.onnx exporter: dynamo (torch.export), torchscript (legacy tracer) or auto (dynamo, falling back "
        "to torchscript)",
        choices=EXPORTERS,
    )
    overwrite: bool = option(False, help="replace an existing --out file", action="store_true")
    push_to_hub: str | None = option(
        None,
        help="with --format hf: also upload the folder to this Hugging Face Hub repository (needs huggingface_hub "
        "and a token: HF_TOKEN or `hf auth login`)",
        metavar="REPO_ID",
    )
    quantize: str | None = option(
        None,
        help="int8: static quantization (ONNX Runtime, QDQ, per-channel int8 weights) calibrated on --calibration",
        choices=QUANTIZE_CHOICES,
        group=QUANTIZE_GROUP,
    )
    calibration: str | Path | None = option(
        None, help="labelled dataset folder to calibrate and score on", parse=Path, metavar="DATA", group=QUANTIZE_GROUP
    )
    classes: Any = classes_option(
        help="the calibration data's class names (as segkit train)", metavar="FILE|a,b,c", group=QUANTIZE_GROUP
    )
    calibration_images: int = option(
        64, help="images calibrating the ranges", parse=int, metavar="N", group=QUANTIZE_GROUP
    )
    max_drop: float = option(
        0.01,
        help="refuse the int8 model when its mIoU is more than D below the fp32 model's",
        parse=float,
        metavar="D",
        group=QUANTIZE_GROUP,
    )
    force: bool = option(
        False, help="keep an int8 model over --max-drop, with a warning", action="store_true", group=QUANTIZE_GROUP
    )
    split: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)

    def __post_init__(self) -> None:
        check_choices(self, OptionError)
        if self.opset < MIN_OPSET:
            raise OptionError(f"--opset must be at least {MIN_OPSET}, not {self.opset}")
        if self.calibration_images < 1:
            raise OptionError(f"--calibration-images must be at least 1, not {self.calibration_images}")
        if not 0.0 <= self.max_drop <= 1.0:
            raise OptionError(f"--max-drop must be between 0 and 1, not {self.max_drop}")
        quantizing = self.quantize is not None
        if quantizing != (self.calibration is not None):
            raise OptionError("--quantize and --calibration DATA go together")
        given = [flag for flag, changed in self._changed(self._quantize_only()) if changed]
        if given and not quantizing:
            raise OptionError(f"{', '.join(given)} only apply with --quantize")
        if self.push_to_hub and self.format != "hf":
            raise OptionError("--push-to-hub needs --format hf")
        onnx_only = [flag for flag, changed in self._changed(("opset", "dynamic", "exporter")) if changed]
        if self.format == "hf" and onnx_only:
            raise OptionError(
                f"{', '.join(onnx_only)} only apply to --format onnx (a Hugging-Face folder holds weights)"
            )
        if quantizing and self.format != "onnx":
            raise OptionError("--quantize writes an ONNX model: use --format onnx")

    def _quantize_only(self) -> tuple[str, ...]:
        """The options that only ``--quantize`` reads."""
        read = (item.name for item in fields(ReadOptions))
        return ("split", *read, "classes", "force", "calibration_images", "max_drop")

    def _changed(self, names: tuple[str, ...]) -> list[tuple[str, bool]]:
        """``(flag, set to other than its default)`` for each option in ``names`` (``--no-dynamic`` for ``dynamic``)."""
        own = {item.name: item.default for item in fields(self)}
        default_read = ReadOptions()
        changed = []
        for name in names:
            if name in own:
                value, default = getattr(self, name), own[name]
            else:
                value, default = getattr(self.read, name), getattr(default_read, name)
            flag = "--no-dynamic" if name == "dynamic" else "--" + name.replace("_", "-")
            changed.append((flag, value != default))
        return changed

    def read_options(self) -> dict[str, Any]:
        """How the calibration data is read: :func:`segkit.data.sources.open_source`'s keywords (``classes`` included)."""
        return {**{item.name: getattr(self.read, item.name) for item in fields(ReadOptions)}, "classes": self.classes}

    def onnx_options(self) -> dict[str, Any]:
        """:func:`segkit.exporters.onnx.export_onnx`'s options."""
        return {"opset": self.opset, "dynamic": self.dynamic, "exporter": self.exporter}
