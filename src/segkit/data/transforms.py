"""Resize policies with an exact undo, on-device normalisation, and training augmentation.

Every image reaches the network through one of three resize policies:

- ``letterbox``: keep the aspect ratio, scale to fit ``img_size`` and pad centred
  (image with ``pad_value``, mask with ``ignore_index``);
- ``resize``: stretch to ``img_size``;
- ``crop``: train on random ``img_size`` crops (padded first when smaller) and
  predict on the whole image at its native size.

The resize step records a :class:`LetterboxGeometry` so that predictions can be
mapped back to the original pixels exactly (:func:`segkit.prediction.predictor.to_original_size`). Letterboxing is
written here with OpenCV rather than with albumentations' ``LongestMaxSize`` +
``PadIfNeeded`` because the prediction path needs the exact scale and offsets to
undo it, and training and prediction must share one implementation of them.
Albumentations does the random augmentation (:func:`build_train_transform`).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, cast

import cv2
import numpy as np

from segkit.data.options import ignore_index_option
from segkit.errors import SegkitError
from segkit.options import option

if TYPE_CHECKING:
    import albumentations as A
    import torch

RESIZE_POLICIES = ("letterbox", "resize", "crop")
AUGMENT_LEVELS = ("none", "light", "default")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Probability that a training sample gets the random affine warp / the colour jitter.
AFFINE_PROBABILITY = 0.5
COLOR_PROBABILITY = 0.5


def _pair(value: Any, name: str) -> tuple[int, int]:
    """``256`` or ``[256, 320]`` -> ``(256, 320)`` (height, width), both positive."""
    values = [value, value] if isinstance(value, (int, float)) else list(value)
    if len(values) != 2 or any(int(v) != v or int(v) < 1 for v in values):
        raise SegkitError(None, f"{name} must be a positive integer or [height, width], got {value!r}")
    return int(values[0]), int(values[1])


def _floats(value: Any, length: int, name: str) -> Any:
    """``length`` floats as a tuple (typed ``Any``: the field it is assigned to fixes the length)."""
    values = tuple(float(v) for v in value)
    if len(values) != length:
        raise SegkitError(None, f"{name} needs {length} numbers, got {list(value)!r}")
    return values


def _plain(value: Any) -> Any:
    """Dataclasses/tuples -> dicts/lists of built-in types (JSON, YAML and ``weights_only`` safe)."""
    if isinstance(value, _DictMixin):
        return {field.name: _plain(getattr(value, field.name)) for field in fields(cast(Any, value))}
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


class _DictMixin:
    """``to_dict``/``from_dict`` for config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """Built-in types only, for checkpoints and ``config.yaml``."""
        return _plain(self)

    @classmethod
    def _check_keys(cls, data: dict[str, Any]) -> None:
        known = {field.name for field in fields(cast(Any, cls))}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SegkitError(None, f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")


@dataclass
class AugmentConfig(_DictMixin):
    """Random augmentation applied to training samples only.

    Attributes:
        hflip: random horizontal flip (p=0.5).
        vflip: random vertical flip (p=0.5).
        rotate90: random rotation by a multiple of 90 degrees (square inputs only: data without a
            "this way up", such as aerial, microscopy or road-surface images).
        scale: random zoom range of the affine warp.
        rotate: maximum rotation in degrees (uniform in ``[-rotate, rotate]``).
        translate: maximum shift as a fraction of the image size.
        color_jitter: brightness/contrast/saturation strength (hue gets a quarter of it).
    """

    hflip: bool = True
    vflip: bool = False
    rotate90: bool = False
    scale: tuple[float, float] = (0.75, 1.25)
    rotate: float = 15.0
    translate: float = 0.1
    color_jitter: float = 0.2

    def __post_init__(self) -> None:
        self.scale = _floats(self.scale, 2, "scale")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise SegkitError(None, f"scale must be [low, high] with 0 < low <= high, got {list(self.scale)}")
        self.rotate = float(self.rotate)
        self.translate = float(self.translate)
        self.color_jitter = float(self.color_jitter)
        if self.rotate < 0 or not 0 <= self.translate < 1 or not 0 <= self.color_jitter <= 1:
            raise SegkitError(None, "rotate must be >= 0, translate in [0, 1), color_jitter in [0, 1]")

    @classmethod
    def preset(cls, level: str) -> AugmentConfig:
        """The named strength: ``"none"``, ``"light"`` or ``"default"``."""
        presets = {
            "none": cls(hflip=False, vflip=False, scale=(1.0, 1.0), rotate=0, translate=0, color_jitter=0),
            "light": cls(hflip=True, vflip=False, scale=(0.9, 1.1), rotate=5, translate=0.05, color_jitter=0.1),
            "default": cls(),
        }
        if level not in presets:
            raise SegkitError(None, f"augmentation must be one of {', '.join(AUGMENT_LEVELS)}, got {level!r}")
        return presets[level]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str) -> AugmentConfig:
        """Build from a preset name, or a dict whose optional ``level`` key picks the base preset."""
        if isinstance(data, str):
            return cls.preset(data)
        data = dict(data)
        base = cls.preset(data.pop("level", "default"))
        cls._check_keys(data)
        return cls(**{**asdict(base), **data})


def _size_option(values: list[str]) -> int | list[int]:
    """``--img-size N`` or ``--img-size H W`` from the command line."""
    try:
        sizes = [int(value) for value in values]
    except ValueError:
        raise SegkitError(None, f"--img-size takes one or two integers, got {' '.join(values)}") from None
    if len(sizes) > 2:
        raise SegkitError(None, f"--img-size takes N or H W, got {len(sizes)} numbers")
    return sizes[0] if len(sizes) == 1 else sizes


@dataclass
class PreprocessConfig(_DictMixin):
    """How samples are sized, normalised and augmented; saved in every checkpoint.

    Attributes:
        img_size: network input ``(height, width)`` for letterbox/resize, crop size for crop.
        resize: ``"letterbox"``, ``"resize"`` or ``"crop"``.
        scale: ``crop`` only: every image is first resized by this factor (1 = native
            resolution); training crops and prediction happen at that scale.
        mean: per-channel RGB mean on the 0..1 scale.
        std: per-channel RGB standard deviation on the 0..1 scale.
        pad_value: image value of letterbox/crop/warp padding.
        ignore_index: mask value of padding (left out of loss and metrics).
        augment: training augmentation: a preset name (``none``, ``light``, ``default``),
            a dict of :class:`AugmentConfig` fields (optional ``level`` base), or an AugmentConfig.
    """

    img_size: tuple[int, int] = option(
        (256, 256),
        help="network input size N or H W (crop policy: the crop size)",
        parse=_size_option,
        nargs="+",
        metavar="N",
        planned=True,
        group="data",
    )
    resize: str = option(
        "letterbox",
        help="how images reach the network: letterbox (keep aspect, pad), resize (stretch) or crop "
        "(random crops at --scale; predict whole or tiled)",
        choices=RESIZE_POLICIES,
        planned=True,
        group="data",
    )
    scale: float = option(
        1.0,
        help="crop policy: resize every image by this factor first (1 = native resolution)",
        planned=True,
        group="data",
        parse=float,
        metavar="F",
    )
    mean: tuple[float, float, float] = option(IMAGENET_MEAN, help="RGB mean (0..1) for normalisation", cli=False)
    std: tuple[float, float, float] = option(IMAGENET_STD, help="RGB standard deviation (0..1)", cli=False)
    pad_value: int = option(0, help="image value of padding", cli=False)
    ignore_index: int = ignore_index_option(255, help="mask value ignored by loss and metrics", group="data")
    augment: AugmentConfig = option(
        default_factory=AugmentConfig,
        help="training augmentation strength",
        choices=AUGMENT_LEVELS,
        group="data",
    )

    def __post_init__(self) -> None:
        self.img_size = _pair(self.img_size, "img_size")
        if self.resize not in RESIZE_POLICIES:
            raise SegkitError(None, f"resize must be one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")
        self.scale = float(self.scale)
        if not 0.05 <= self.scale <= 1.0 or (self.resize != "crop" and self.scale != 1.0):
            raise SegkitError(None, f"scale must be in [0.05, 1] and is for the crop policy only, got {self.scale}")
        self.mean = _floats(self.mean, 3, "mean")
        self.std = _floats(self.std, 3, "std")
        if min(self.std) <= 0:
            raise SegkitError(None, f"std values must be positive, got {list(self.std)}")
        for name in ("pad_value", "ignore_index"):
            value = int(getattr(self, name))
            if not 0 <= value <= 255:
                raise SegkitError(None, f"{name} must be 0..255, got {getattr(self, name)}")
            setattr(self, name, value)
        if not isinstance(self.augment, AugmentConfig):
            self.augment = AugmentConfig.from_dict(self.augment)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Build from a checkpoint/config dict (lists accepted for tuples, missing keys default)."""
        cls._check_keys(data)
        return cls(**data)


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where the original image lies inside the network input, to undo the resize exactly.

    The original ``orig_h x orig_w`` image was resized to ``new_h x new_w`` and placed at
    ``(top, left)`` inside an ``out_h x out_w`` input. ``scale`` is the letterbox factor
    (for ``resize`` the vertical factor ``new_h / orig_h``; ``1.0`` for ``crop``).
    """

    orig_h: int
    orig_w: int
    scale: float
    top: int
    left: int
    new_h: int
    new_w: int
    out_h: int
    out_w: int


def compute_geometry(
    height: int, width: int, img_size: tuple[int, int], policy: str, scale: float = 1.0
) -> LetterboxGeometry:
    """The geometry a policy gives an ``height x width`` image (``crop``: the image resized by ``scale``)."""
    out_h, out_w = img_size
    if policy == "letterbox":
        scale = min(out_h / height, out_w / width)
        new_h = min(out_h, max(1, round(height * scale)))
        new_w = min(out_w, max(1, round(width * scale)))
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        return LetterboxGeometry(height, width, scale, top, left, new_h, new_w, out_h, out_w)
    if policy == "resize":
        return LetterboxGeometry(height, width, out_h / height, 0, 0, out_h, out_w, out_h, out_w)
    if policy == "crop":
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        return LetterboxGeometry(height, width, scale, 0, 0, new_h, new_w, new_h, new_w)
    raise SegkitError(None, f"resize must be one of {', '.join(RESIZE_POLICIES)}, got {policy!r}")


def apply_geometry(array: np.ndarray, geometry: LetterboxGeometry, *, fill: int, nearest: bool) -> np.ndarray:
    """Resize ``array`` (image ``(H,W,3)`` or mask ``(H,W)``) and pad it as ``geometry`` says.

    Images use INTER_AREA when shrinking and INTER_LINEAR when enlarging; masks
    (``nearest=True``) use INTER_NEAREST_EXACT, whose pixel centres match the
    half-pixel convention of the bilinear undo.
    """
    g = geometry
    if (g.new_h, g.new_w) != array.shape[:2]:
        if nearest:
            interpolation = cv2.INTER_NEAREST_EXACT
        elif g.new_h <= g.orig_h and g.new_w <= g.orig_w:
            interpolation = cv2.INTER_AREA
        else:
            interpolation = cv2.INTER_LINEAR
        resized = cv2.resize(array, (g.new_w, g.new_h), interpolation=interpolation)
        array = resized.reshape(g.new_h, g.new_w, *array.shape[2:])  # cv2 drops a 1-channel axis
    bottom, right = g.out_h - g.new_h - g.top, g.out_w - g.new_w - g.left
    if g.top or g.left or bottom or right:
        value = fill if array.ndim == 2 else (fill,) * array.shape[2]
        array = cv2.copyMakeBorder(array, g.top, bottom, g.left, right, cv2.BORDER_CONSTANT, value=value)
    return np.ascontiguousarray(array)


def resize_image(image: np.ndarray, preprocess: PreprocessConfig) -> tuple[np.ndarray, LetterboxGeometry]:
    """Bring an RGB image to the network input for prediction, with the geometry to undo it."""
    geometry = compute_geometry(
        image.shape[0], image.shape[1], preprocess.img_size, preprocess.resize, preprocess.scale
    )
    return apply_geometry(image, geometry, fill=preprocess.pad_value, nearest=False), geometry


def resize_sample(image: np.ndarray, mask: np.ndarray, preprocess: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Apply the deterministic resize step to an image and its mask (mask padding: ``ignore_index``).

    ``crop`` keeps the full sample (resized by ``scale``); its random crop happens in training.
    """
    geometry = compute_geometry(
        image.shape[0], image.shape[1], preprocess.img_size, preprocess.resize, preprocess.scale
    )
    return (
        apply_geometry(image, geometry, fill=preprocess.pad_value, nearest=False),
        apply_geometry(mask, geometry, fill=preprocess.ignore_index, nearest=True),
    )


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``(N,3,H,W)`` or ``(3,H,W)`` images -> float32 ``(x/255 - mean) / std``.

    Runs wherever ``images`` are (the GPU in training and prediction), so data
    loader workers only move uint8 tensors, four times smaller than float32.
    """
    import torch

    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(-1, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(-1, 1, 1) * 255.0
    return (images.float() - mean_t) / std_t


def build_train_transform(preprocess: PreprocessConfig, seed: int | None = None) -> A.Compose:
    """The random training pipeline, applied after :func:`resize_sample` (and after the crop of the
    ``crop`` policy, :class:`segkit.data.sampling.CropSampler`).

    Flips, an affine warp (scale, rotation, shift; masks nearest, uncovered mask pixels
    set to ``ignore_index``) and colour jitter.

    Args:
        preprocess: resize policy, crop size, augmentation strengths, padding values.
        seed: seed of the pipeline's random state (see :func:`seed_transform`).
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (network) on import
    import albumentations as A

    augment, ignore_index = preprocess.augment, preprocess.ignore_index
    steps: list[A.BasicTransform] = []
    if augment.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if augment.vflip:
        steps.append(A.VerticalFlip(p=0.5))
    if augment.rotate90:
        if preprocess.img_size[0] != preprocess.img_size[1]:
            raise SegkitError(
                None, f"rotate90 needs a square input, not {preprocess.img_size[1]}x{preprocess.img_size[0]}"
            )
        steps.append(A.RandomRotate90(p=0.75))
    if augment.scale != (1.0, 1.0) or augment.rotate or augment.translate:
        steps.append(
            A.Affine(
                scale=augment.scale,
                rotate=(-augment.rotate, augment.rotate),
                translate_percent=(-augment.translate, augment.translate),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=preprocess.pad_value,
                fill_mask=ignore_index,
                p=AFFINE_PROBABILITY,
            )
        )
    if augment.color_jitter:
        strength = augment.color_jitter
        steps.append(
            A.ColorJitter(
                brightness=strength,
                contrast=strength,
                saturation=strength,
                hue=min(0.5, strength / 4),
                p=COLOR_PROBABILITY,
            )
        )
    transform = A.Compose(steps)
    seed_transform(transform, seed)
    return transform


def seed_transform(transform: A.Compose, seed: int | None) -> None:
    """Give every step of ``transform`` one shared random state seeded with ``seed``.

    ``A.Compose(seed=s)`` seeds each step with the same ``s``, which makes e.g. the
    horizontal and vertical flip decisions identical; one shared generator keeps
    them independent while staying reproducible.
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
