"""Predict masks with a trained model, always at the input image's original size.

The model card carries the classes and the preprocessing the model was trained
with; :class:`Predictor` applies the same resize policy, runs the network in
batches on its backend, and maps the class scores back to the original pixels
(:func:`to_original_size`) before the mask step. Large images can be predicted
window by window (:mod:`segkit.prediction.tiling`) and predictions averaged over
flips and scales (:mod:`segkit.prediction.tta`).

The network runs behind a small interface (:class:`~segkit.prediction.backend.Backend`):
a PyTorch module (:class:`~segkit.prediction.torch_backend.TorchBackend`) or an
exported ``.onnx`` file in ONNX Runtime (:class:`~segkit.prediction.onnx_backend.OnnxBackend`,
numpy only: this module and the ONNX path import no PyTorch). Everything else is
this one implementation, written against :mod:`segkit.prediction.arrays`.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from segkit.checkpoint import Checkpoint, ModelCard, open_checkpoint
from segkit.data.io import read_image, to_rgb
from segkit.data.transforms import LetterboxGeometry, PreprocessConfig, resize_image
from segkit.errors import SegkitError
from segkit.prediction.arrays import Array, array_ops, probabilities_to_mask, scores_from_logits
from segkit.prediction.backend import Backend
from segkit.prediction.tiling import TileConfig, TilePlan, predict_tiled
from segkit.prediction.tta import TTAConfig, augmented_probabilities

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TORCH_INSTALL_HINT = "pip install 'segkit[torch]'"
DEFAULT_BATCH_SIZE = 8  # images per forward pass
MEMORY_SHARE = 0.5  # one forward pass may take this share of the device's free memory (the batch is lowered)

ImageInput = str | Path | Image.Image | np.ndarray


def as_rgb(image: ImageInput) -> np.ndarray:
    """Any supported input -> ``(H, W, 3)`` uint8 RGB.

    Paths and PIL images are shown as a viewer shows them (EXIF orientation
    applied; transparency over white); numpy arrays are taken as they are:
    ``(H, W)`` gray, ``(H, W, 1|3|4)`` uint8.
    """
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # as read_image: a broken EXIF block must not hide the pixels
            pass
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8, got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.ndim == 2:
            return np.repeat(image[..., None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        if image.ndim == 3 and image.shape[2] == 4:
            return to_rgb(Image.fromarray(image))
        raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    raise TypeError(f"cannot predict on a {type(image).__name__}; give a path, PIL image or numpy array")


def to_original_size(scores: Array, geometry: LetterboxGeometry) -> Array:
    """Map ``(C, out_h, out_w)`` network-size scores back to the original image: crop the padding, resize bilinearly.

    Resizing scores rather than the mask keeps class boundaries smooth and sub-pixel accurate.
    """
    g = geometry
    if tuple(scores.shape[-2:]) != (g.out_h, g.out_w):
        raise ValueError(f"scores are {tuple(scores.shape[-2:])}, geometry expects {(g.out_h, g.out_w)}")
    inside = scores[:, g.top : g.top + g.new_h, g.left : g.left + g.new_w]
    if (g.new_h, g.new_w) == (g.orig_h, g.orig_w):
        return inside
    return array_ops(scores).resize(inside[None], (g.orig_h, g.orig_w))[0]


def _torch_module(model: Any) -> bool:
    """Whether ``model`` is a ``torch.nn.Module`` (PyTorch is imported already if it is one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


class Predictor:
    """A trained model with its model card: image in, index mask at the image's size out.

    Args:
        model: the network: a ``torch.nn.Module`` (moved to ``device``, put in eval mode and
            in ``channels_last`` memory format), or a ready
            :class:`~segkit.prediction.backend.Backend` such as an ONNX Runtime model.
        card: the model card (classes, colours, preprocessing, binary mode ...).
        device: where a torch module runs: ``auto`` (CUDA, MPS, CPU), ``cpu``, ``cuda:1`` ...
            (a backend keeps its own device).
        tiling: when images are predicted window by window (default: automatic, see
            :class:`~segkit.prediction.tiling.TileConfig`).
        tta: test-time augmentation (default: none), a
            :class:`~segkit.prediction.tta.TTAConfig` or a string such as ``"flip+scale"``.
        crf: refine the probabilities with a dense CRF on the image (DeepLab v1/v2
            post-processing, :func:`~segkit.prediction.crf.dense_crf`; needs PyTorch).
        threshold: binary models: foreground probability threshold (default: the card's).
        batch_size: images per forward pass.

    Attributes:
        card: the model card; ``classes``, ``palette`` (``(256, 3)`` uint8, the classes'
            colours first), ``binary``, ``preprocess``, ``ignore_index`` and ``background``
            come from it.
        backend: the network behind its interface; ``model`` and ``device`` are its.
        threshold: probability above which a binary pixel is foreground (class 1).

    Example:
        >>> predictor = Predictor.from_checkpoint("runs/exp/best.pt", tta="flip")
        >>> mask = predictor.predict("photo.jpg")  # (H, W) uint8 at the photo's size
    """

    def __init__(
        self,
        model: torch.nn.Module | Backend,
        card: ModelCard,
        *,
        device: str | torch.device = "auto",
        tiling: TileConfig | None = None,
        tta: TTAConfig | str | None = None,
        crf: bool = False,
        threshold: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if threshold is not None and not card.binary:
            raise SegkitError(None, f"--threshold needs a binary checkpoint; this one has {card.num_classes} classes")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise SegkitError(None, f"threshold must be between 0 and 1, not {threshold}")
        if batch_size < 1:
            raise SegkitError(None, f"batch size must be at least 1, not {batch_size}")
        if crf:
            _require_torch("--crf")
        if isinstance(model, Backend):
            self.backend = model
        elif _torch_module(model):
            from segkit.prediction.torch_backend import TorchBackend

            self.backend = TorchBackend(model, device)
        else:
            raise TypeError(f"model must be a torch.nn.Module or a Backend, got {type(model).__name__}")
        self.card = card
        self.palette = card.palette_array()
        self.threshold = card.threshold if threshold is None else float(threshold)
        self.batch_size = batch_size
        self.tiling = tiling or TileConfig()
        self.tta = tta if isinstance(tta, TTAConfig) else TTAConfig.parse(tta)
        self.crf = crf

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path | Checkpoint, device: str | torch.device = "auto", **options: Any
    ) -> Predictor:
        """Build the model a checkpoint (path or :class:`~segkit.checkpoint.Checkpoint`) describes, with its weights.

        A path ending in ``.onnx`` (written by ``segkit export``) runs in ONNX Runtime
        instead, without PyTorch; a folder written by ``segkit export --format hf`` is read by
        :func:`segkit.checkpoint.load_pretrained`. ``options`` are the constructor's (``tiling``,
        ``tta``, ``crf``, ``threshold``, ``batch_size``).

        Raises:
            SegkitError: unreadable checkpoint, malformed card, weights that do not fit the
                model, or a ``.pt`` checkpoint without PyTorch installed.
        """
        if isinstance(checkpoint, Checkpoint):
            options = fit_pass_memory(checkpoint.card, device, options, None)
            return cls(checkpoint.build_model(None), checkpoint.card, device=device, **options)
        path = Path(checkpoint)
        if path.suffix.lower() == ".onnx":
            from segkit.prediction.onnx_backend import OnnxBackend

            backend = OnnxBackend(path, str(device))
            return cls(backend, backend.card, **options)
        _require_torch(f"loading {path.name}", path)
        loaded = open_checkpoint(path)
        options = fit_pass_memory(loaded.card, device, options, path)
        return cls(loaded.build_model(path), loaded.card, device=device, **options)

    @property
    def model(self) -> Any:
        """The network: a ``torch.nn.Module``, or an ONNX Runtime session."""
        return self.backend.model

    @property
    def device(self) -> Any:
        """Where the network runs: a ``torch.device``, or ``"cpu"``/``"cuda:N"`` for ONNX Runtime."""
        return self.backend.device

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    @property
    def binary(self) -> bool:
        return self.card.binary

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.card.preprocess

    @property
    def ignore_index(self) -> int:
        return self.card.ignore_index

    @property
    def background(self) -> int | None:
        return self.card.background

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def predict(self, image: ImageInput) -> np.ndarray:
        """One image -> ``(H, W)`` uint8 class-index mask at the image's original size."""
        return self.predict_batch([image], batch_size=1)[0]

    def predict_proba(self, image: ImageInput) -> np.ndarray:
        """One image -> ``(C, H, W)`` float32 class probabilities (binary: ``[1 - p, p]``)."""
        with self.backend.inference():
            (probabilities,) = self._probabilities([as_rgb(image)])
            return self.backend.ops.to_numpy(probabilities)

    def predict_batch(self, images: Sequence[ImageInput], batch_size: int | None = None) -> list[np.ndarray]:
        """Masks for many images (of any sizes), ``batch_size`` (default: the predictor's) at a time."""
        return [mask for _, mask in self.iter_predict(images, batch_size)]

    def iter_predict(
        self, images: Sequence[ImageInput], batch_size: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rgb_image, mask)`` per input, in order, decoding one chunk of inputs at a time."""
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(images), batch_size):
            arrays = [as_rgb(image) for image in images[start : start + batch_size]]
            with self.backend.inference():
                masks = [self._mask(probabilities) for probabilities in self._probabilities(arrays)]
            yield from zip(arrays, masks)

    def _mask(self, probabilities: Array) -> np.ndarray:
        mask = probabilities_to_mask(probabilities, self.binary, self.threshold)
        return self.backend.ops.to_numpy(mask)

    def tile_plan(self, height: int, width: int) -> TilePlan | None:
        """The windows an ``height x width`` image is predicted in (see :attr:`tiling`); None: predicted whole."""
        return self.tiling.plan(height, width, self.preprocess)

    def _probabilities(self, arrays: list[np.ndarray]) -> list[Array]:
        """``(C, H, W)`` probabilities on the backend's device at each image's original size.

        Images that :attr:`tiling` selects are predicted window by window, the others whole.
        """
        results: list[Array] = [None] * len(arrays)
        whole: list[int] = []
        # windows are padded with the mean colour: what the network's own padding (0 after normalisation) shows it
        mean_colour = [round(255 * value) for value in self.preprocess.mean]
        for index, array in enumerate(arrays):
            plan = self.tile_plan(*array.shape[:2])
            if plan is None:
                whole.append(index)
                continue
            results[index] = predict_tiled(array, self._network_probabilities, plan, fill=mean_colour)
        for index, probabilities in zip(whole, self._network_probabilities([arrays[i] for i in whole])):
            results[index] = probabilities
        if self.crf:
            from segkit.prediction.crf import dense_crf

            results = [
                self.backend.ops.asarray(dense_crf(probabilities, array), like=probabilities)
                for probabilities, array in zip(results, arrays)
            ]
        return results

    def _network_probabilities(self, arrays: list[np.ndarray]) -> list[Array]:
        """``(C, H, W)`` probabilities for whole images (or windows), through the resize policy and back.

        Inputs of equal network size (all of them for letterbox/resize; equal native
        sizes for crop) go through the model in one forward pass.
        """
        prepared = [resize_image(array, self.preprocess) for array in arrays]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (resized, _) in enumerate(prepared):
            groups.setdefault(resized.shape, []).append(index)
        results: list[Array] = [None] * len(arrays)
        for indices in groups.values():
            images = self.backend.prepare(np.stack([prepared[i][0] for i in indices]), self.preprocess)
            scores = augmented_probabilities(images, self._model_scores, self.tta)
            for slot, index in enumerate(indices):
                results[index] = to_original_size(scores[slot], prepared[index][1])
        return results

    def _model_scores(self, images: Array) -> Array:
        return scores_from_logits(self.backend.forward(images), self.binary)


def load_predictor(checkpoint: str | Path, device: str = "auto", **options: Any) -> Predictor:
    """:meth:`Predictor.from_checkpoint`, with its errors naming the checkpoint."""
    try:
        return Predictor.from_checkpoint(checkpoint, device=device, **options)
    except SegkitError as error:
        raise SegkitError(error.path or checkpoint, error.problem) from None


def _require_torch(what: str, path: str | Path | None = None) -> None:
    """Raise a one-line SegkitError naming the extra to install when PyTorch is missing."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise SegkitError(path, f"{what} needs PyTorch, which this install lacks: {TORCH_INSTALL_HINT}")


def fit_pass_memory(
    card: ModelCard, device: str | torch.device, options: dict[str, Any], source: str | Path | None
) -> dict[str, Any]:
    """``options`` with the batch lowered so that one forward pass needs at most :data:`MEMORY_SHARE` of the
    device's free memory; checked on the card before the model is built.

    The largest pass is ``batch_size`` whole inputs for letterbox/resize cards, and a batch of the
    largest windows for crop cards (their whole images at native scale are bounded by the images).

    Raises:
        SegkitError: not even one input (or window) fits: the card asks for too large an input.
    """
    from segkit.device import available_memory, resolve_device

    free = available_memory(resolve_device(device))
    budget = None if free is None else int(MEMORY_SHARE * free)
    preprocess = card.preprocess
    if preprocess.resize == "crop":
        tiling = options.get("tiling") or TileConfig()
        window = tiling.window_size(preprocess) or preprocess.img_size  # in original pixels
        height, width = (math.ceil(side * preprocess.scale) for side in window)  # at the network's scale
        batch = card.batch_that_fits(height, width, tiling.batch_for(), budget, source)
        if batch < tiling.batch_for():
            logger.info("tile batch lowered to %d so that a forward pass fits the free memory", batch)
            return {**options, "tiling": replace(tiling, batch_size=batch)}
        return options
    requested = int(options.get("batch_size", DEFAULT_BATCH_SIZE))
    batch = card.batch_that_fits(*preprocess.img_size, requested, budget, source)
    if batch < requested:
        logger.info("batch size lowered to %d so that a forward pass fits the free memory", batch)
        return {**options, "batch_size": batch}
    return options
