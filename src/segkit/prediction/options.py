"""How images are predicted: the options ``segkit predict`` and ``segkit evaluate`` share, checked in one place.

The command line, :func:`segkit.predict`, :func:`segkit.evaluate` and :func:`segkit.load` take
them by the same names (``--tile 512x768`` is ``tile="512x768"``);
:meth:`PredictionOptions.predictor_kwargs` turns them into
:class:`~segkit.prediction.predictor.Predictor` arguments. This module imports nothing heavy,
so the command line can read its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segkit.errors import OptionError
from segkit.options import option

if TYPE_CHECKING:
    from segkit.prediction.tta import TTAConfig

# What ``tile`` may be given as: "auto", 0 or None (never tile), N, "N", "HxW" or (H, W).
TileSpec = str | int | tuple[int, int] | None
# Windows are up to 4x the network input's area: at most 4 per pass keeps a 4096x4096 image under 2 GiB.
MAX_TILE_BATCH = 4
GROUP = "prediction (as segkit predict)"  # the help section of these options in every command that takes them
DEFAULT_ALPHA = 0.5  # opacity of the class colours in overlay images


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

    batch_size: int = option(
        8, help=f"images per forward pass (tile windows: at most {MAX_TILE_BATCH})", parse=int, metavar="N", group=GROUP
    )
    device: str = option("auto", help="auto, cpu, cuda, cuda:1, mps", metavar="DEVICE", group=GROUP)
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
