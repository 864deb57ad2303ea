"""How images are predicted: the options ``segkit predict`` and ``segkit evaluate`` share, checked in one place;
and what ``segkit predict`` writes (:class:`OutputOptions`, its own options).

The command line, :func:`segkit.predict`, :func:`segkit.evaluate` and :func:`segkit.load` take
them by the same names (``--tile 512x768`` is ``tile="512x768"``);
:meth:`PredictionOptions.predictor_kwargs` turns them into
:class:`~segkit.prediction.predictor.Predictor` arguments. This module imports nothing heavy,
so the command line can read its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.data.options import roi_masks_option
from segkit.errors import OptionError
from segkit.options import check_choices, option

if TYPE_CHECKING:
    from segkit.prediction.tta import TTAConfig

# What ``tile`` may be given as: "auto", 0 or None (never tile), N, "N", "HxW" or (H, W).
TileSpec = str | int | tuple[int, int] | None
# Windows are up to 4x the network input's area: at most 4 per pass keeps a 4096x4096 image under 2 GiB.
MAX_TILE_BATCH = 4
GROUP = "prediction (as segkit predict)"  # the help section of these options in every command that takes them
DEFAULT_ALPHA = 0.5  # opacity of the class colours in overlay images
FORMATS = ("png", "labelme")  # what ``segkit predict --format`` writes per image


def parse_tile_size(value: TileSpec) -> str | tuple[int, int] | None:
    """``"auto"`` -> ``"auto"``; ``0``/``None`` -> ``None`` (never tile); ``512``, ``"512x768"``, ``(512, 768)`` -> ``(height, width)``.

    Raises:
        OptionError: anything else, or a side of 0 beside a positive one.
    """
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        parts: list[Any] = value.lower().split("x")
    elif isinstance(value, (tuple, list)):
        parts = list(value) if len(value) == 2 else []
    else:
        parts = [value]
    if not 1 <= len(parts) <= 2 or not all(_is_whole_number(part) for part in parts):
        raise OptionError(f"--tile: expected auto, 0, N or HxW, got {value!r}")
    sides = [int(part) for part in parts]
    if sides == [0]:
        return None
    if min(sides) < 1:
        raise OptionError(f"--tile: window sides must be positive, got {value!r}")
    return (sides[0], sides[-1])


def _is_whole_number(part: Any) -> bool:
    """A non-negative whole number written out (``"512"``), or any ``int`` (not a bool)."""
    return part.isdigit() if isinstance(part, str) else isinstance(part, int) and not isinstance(part, bool)


def batch_size_option(group: str = GROUP) -> Any:
    """``--batch-size``: of :class:`PredictionOptions`, and of the commands that predict with only it and ``--device``."""
    return option(
        8, help=f"images per forward pass (tile windows: at most {MAX_TILE_BATCH})", parse=int, metavar="N", group=group
    )


def device_option(group: str = GROUP) -> Any:
    """``--device``: where the model runs (:class:`PredictionOptions`, ``segkit report``, ``segkit serve``)."""
    return option("auto", help="auto, cpu, cuda, cuda:1, mps", metavar="DEVICE", group=group)


@dataclass(frozen=True)
class PredictionOptions:
    """How a checkpoint predicts, in the command line's terms (validated when made).

    Each field is also the command-line option of ``predict``, ``evaluate`` and ``suggest``
    (declared here once, with its help).

    Attributes:
        batch_size: images per forward pass (tile windows: at most 4).
        device: ``auto`` (CUDA, MPS, CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        threshold: binary checkpoints: foreground probability threshold (default: the checkpoint's).
        tile: predict in overlapping windows of original pixels: ``"auto"`` (crop checkpoints
            tile images larger than 4 x img_size), ``0``/``None`` (never), ``N``, ``"HxW"`` or
            ``(H, W)``; read by :func:`parse_tile_size`.
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
        tta: test-time augmentation: ``none``, ``flip``, ``vflip``, ``scale`` or a combination
            such as ``flip+scale`` (or a :class:`~segkit.prediction.tta.TTAConfig`).
        crf: refine the probabilities with a dense CRF on the image colours (needs PyTorch).

    Raises:
        OptionError: a value out of range.
    """

    batch_size: int = batch_size_option()
    device: str = device_option()
    threshold: float | None = option(
        None, help="binary checkpoints: foreground probability threshold", parse=float, metavar="T", group=GROUP
    )
    tile: TileSpec = option(
        "auto",
        help="predict in overlapping N x N (or H x W) windows of original pixels, blended with a Gaussian weight; "
        "0 never tiles; auto: crop checkpoints tile images larger than 4 x img_size",
        metavar="N|HxW",
        group=GROUP,
    )
    overlap: float = option(
        0.25, help="fraction of a window shared with its neighbour", parse=float, metavar="F", group=GROUP
    )
    tta: str | TTAConfig = option(
        "none",
        help="test-time augmentation: none, flip, vflip, scale or a combination such as flip+scale",
        metavar="AUG",
        group=GROUP,
    )
    crf: bool = option(
        False,
        help="refine the probabilities with a dense CRF on the image colours (DeepLab v1/v2 post-processing; "
        "needs PyTorch)",
        parse=bool,
        group=GROUP,
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise OptionError(f"--threshold must be between 0 and 1, not {self.threshold}")
        if not 0.0 <= self.overlap < 1.0:
            raise OptionError(f"--overlap must be at least 0 and below 1, not {self.overlap}")
        object.__setattr__(self, "tile", parse_tile_size(self.tile))

    def tta_config(self) -> TTAConfig:
        """The parsed ``tta``.

        Raises:
            SegkitError: an unknown augmentation name.
        """
        from segkit.prediction.tta import TTAConfig

        return self.tta if isinstance(self.tta, TTAConfig) else TTAConfig.parse(self.tta)

    def predictor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`Predictor.from_checkpoint <segkit.prediction.predictor.Predictor.from_checkpoint>` (``device`` included)."""
        from segkit.prediction.tiling import TileConfig

        size = self.tile if isinstance(self.tile, tuple) else None  # parsed: "auto", None or (height, width)
        tiling = TileConfig(
            size, auto=self.tile == "auto", overlap=self.overlap, batch_size=min(self.batch_size, MAX_TILE_BATCH)
        )
        return {
            "device": self.device,
            "batch_size": self.batch_size,
            "tiling": tiling,
            "tta": self.tta_config(),
            "crf": self.crf,
            "threshold": self.threshold,
        }


@dataclass(frozen=True)
class OutputOptions:
    """What :func:`segkit.predict` writes beside the masks: ``segkit predict``'s own options, by its keyword names.

    Checked when made, before any model is read.

    Raises:
        OptionError: an unknown ``format``, labelme-only options without ``format="labelme"``,
            a negative ``polygon_tolerance`` or ``min_area``, ``alpha`` outside ``[0, 1]`` or
            set without ``overlay``.
    """

    color: bool = option(False, help="also write DIR/<stem>_color.png (class colours)", action="store_true")
    overlay: bool = option(False, help="also write DIR/<stem>_overlay.jpg (colours on the image)", action="store_true")
    alpha: float = option(DEFAULT_ALPHA, help="with --overlay: opacity of the overlay colours", parse=float)
    format: str = option(
        "png",
        help="png: DIR/<stem>.png index masks; labelme: DIR/<stem>.json labelme annotations (one polygon "
        "per region and class, mask shapes for regions with holes) and DIR/labels.txt, to correct in labelme; "
        "--out DIR may be the images' folder",
        choices=FORMATS,
    )
    image_data: bool = option(
        False, help="with --format labelme: embed the image in the JSON (imageData)", action="store_true"
    )
    polygon_tolerance: float = option(
        1.0,
        help="with --format labelme: largest distance of a simplified polygon from the region's outline",
        parse=float,
        metavar="PX",
    )
    min_area: int = option(
        16, help="with --format labelme: regions of fewer pixels are left out", parse=int, metavar="PX"
    )
    roi_masks: str | Path | None = roi_masks_option(
        help="region-of-interest masks of the inputs: a folder (<stem>.*) or a pattern with {id} standing for each "
        "input's file name stem ('mask/{id}_mask.gif'); predictions outside them become the background class",
        group="options",
    )

    def __post_init__(self) -> None:
        check_choices(self, OptionError)
        defaults = OutputOptions.image_data, OutputOptions.polygon_tolerance, OutputOptions.min_area
        if self.format != "labelme" and (self.image_data, self.polygon_tolerance, self.min_area) != defaults:
            raise OptionError("--image-data, --polygon-tolerance and --min-area apply with --format labelme")
        if self.polygon_tolerance < 0 or self.min_area < 0:
            raise OptionError("--polygon-tolerance and --min-area must be at least 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError(f"--alpha must be between 0 and 1, not {self.alpha}")
        if self.alpha != DEFAULT_ALPHA and not self.overlay:
            raise OptionError("--alpha sets the opacity of --overlay images: add --overlay")
