"""Predict masks with a trained checkpoint, always at the input image's original size.

The checkpoint carries the model, the classes and the preprocessing it was
trained with; :class:`Predictor` applies the same resize policy, runs the model
in batches on the device, and maps the class scores back to the original pixels
(:func:`segkit.data.transforms.undo_resize`) before taking the argmax. Large
images can be predicted window by window (:mod:`segkit.prediction.tiling`),
predictions averaged over flips and scales (:mod:`segkit.prediction.tta`), and
an exported ``.onnx`` file runs through ONNX Runtime with the same code
around the network (:mod:`segkit.prediction.onnx_backend`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from segkit.checkpoint import Checkpoint, ModelCard, load_checkpoint
from segkit.data.io import read_image, to_rgb
from segkit.data.transforms import PreprocessConfig, normalize, resize_image, undo_resize
from segkit.device import resolve_device
from segkit.errors import SegkitError
from segkit.prediction.tiling import TileConfig, TilePlan, predict_tiled
from segkit.prediction.tta import TTAConfig, augmented_probabilities

ImageInput = Union[str, Path, Image.Image, np.ndarray]


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


class Predictor:
    """A trained model with its model card: image in, index mask at the image's size out.

    Args:
        model: the network (a torch module, or an ONNX Runtime model).
        card: the model card (classes, colours, preprocessing, binary mode ...).
        device: where the model runs: ``auto`` (CUDA, MPS, CPU), ``cpu``, ``cuda:1`` ...
        tiling: when images are predicted window by window (default: automatic, see
            :class:`~segkit.prediction.tiling.TileConfig`).
        tta: test-time augmentation (default: none), a
            :class:`~segkit.prediction.tta.TTAConfig` or a string such as ``"flip+scale"``.
        crf: refine the probabilities with a dense CRF on the image (DeepLab v1/v2
            post-processing, :func:`~segkit.models.crf.dense_crf`).
        threshold: binary models: foreground probability threshold (default: the card's).
        batch_size: images per forward pass.

    Attributes:
        card: the model card; ``classes``, ``palette`` (``(256, 3)`` uint8, the classes'
            colours first), ``binary``, ``preprocess``, ``ignore_index`` and ``background``
            come from it.
        threshold: probability above which a binary pixel is foreground (class 1).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        *,
        device: str | torch.device = "auto",
        tiling: TileConfig | None = None,
        tta: TTAConfig | str | None = None,
        crf: bool = False,
        threshold: float | None = None,
        batch_size: int = 8,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        # NHWC convolutions are several times faster on CPU (benchmarks/); ONNX Runtime takes NCHW.
        self.channels_last = any(True for _ in model.parameters())
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.card = card
        self.palette = card.palette_array()
        if threshold is not None and not card.binary:
            raise SegkitError(None, f"--threshold needs a binary checkpoint; this one has {card.num_classes} classes")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise SegkitError(None, f"threshold must be between 0 and 1, not {threshold}")
        self.threshold = card.threshold if threshold is None else float(threshold)
        if batch_size < 1:
            raise SegkitError(None, f"batch size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.tiling = tiling or TileConfig()
        self.tta = tta if isinstance(tta, TTAConfig) else TTAConfig.parse(tta)
        self.crf = crf

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path | Checkpoint, device: str | torch.device = "auto", **options: Any
    ) -> Predictor:
        """Build the model a checkpoint (path or :class:`~segkit.checkpoint.Checkpoint`) describes, with its weights.

        A path ending in ``.onnx`` (written by ``segkit export``) runs in ONNX Runtime instead; a
        folder written by ``segkit export --format hf`` is read by :func:`segkit.export.hf.load_pretrained`.
        ``options`` are the constructor's (``tiling``, ``tta``, ``crf``, ``threshold``, ``batch_size``).

        Raises:
            SegkitError: unreadable checkpoint, malformed card, or weights that do not fit the model.
        """
        path = Path(checkpoint) if isinstance(checkpoint, (str, Path)) else None
        if path is not None and path.suffix.lower() == ".onnx":
            from segkit.prediction.onnx_backend import OnnxRuntimeModel

            onnx_model = OnnxRuntimeModel(path, device)
            return cls(onnx_model, onnx_model.card, device=onnx_model.device, **options)
        if path is not None and path.is_dir():  # a folder written by `segkit export --format hf`
            from segkit.export.hf import load_pretrained

            loaded = load_pretrained(path)
        else:
            loaded = load_checkpoint(path) if path is not None else checkpoint
        return cls(loaded.build_model(path), loaded.card, device=device, **options)

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
        (probabilities,) = self._probabilities([as_rgb(image)])
        return probabilities.cpu().numpy()

    def predict_batch(self, images: Sequence[ImageInput], batch_size: int | None = None) -> list[np.ndarray]:
        """Masks for many images, ``batch_size`` (default: the predictor's) at a time."""
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
            for array, probabilities in zip(arrays, self._probabilities(arrays)):
                yield array, self._labels(probabilities)

    def _labels(self, probabilities: torch.Tensor) -> np.ndarray:
        if self.binary:
            labels = probabilities[1] > self.threshold
        else:
            labels = probabilities.max(0).indices  # on CPU ~10x faster than argmax over a non-last dim
        return labels.to(torch.uint8).cpu().numpy()

    @torch.inference_mode()
    def _probabilities(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        """``(C, H, W)`` probabilities at each image's original size.

        Images that :attr:`tiling` selects are predicted window by window (their
        probabilities come back on the CPU); the others whole, on the device.
        """
        results: list[torch.Tensor | None] = [None] * len(arrays)
        whole: list[int] = []
        for index, array in enumerate(arrays):
            window = self.tiling.window_for(*array.shape[:2], self.preprocess)
            if window is None:
                whole.append(index)
                continue
            plan = TilePlan.create(*array.shape[:2], window, self.tiling.overlap, self.tiling.batch_size)
            results[index] = predict_tiled(array, self._network_probabilities, plan, fill=self.preprocess.pad_value)
        for index, probabilities in zip(whole, self._network_probabilities([arrays[i] for i in whole])):
            results[index] = probabilities
        if self.crf:
            from segkit.models.crf import dense_crf

            results = [dense_crf(probabilities, array) for probabilities, array in zip(results, arrays)]
        return results

    def _network_probabilities(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        """``(C, H, W)`` probabilities on the device for whole images (or windows), through the resize policy.

        Inputs of equal network size (all of them for letterbox/resize; equal native
        sizes for crop) go through the model in one forward pass.
        """
        prepared = [resize_image(array, self.preprocess) for array in arrays]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (resized, _) in enumerate(prepared):
            groups.setdefault(resized.shape, []).append(index)
        results: list[torch.Tensor | None] = [None] * len(arrays)
        for indices in groups.values():
            batch = torch.from_numpy(np.stack([prepared[i][0] for i in indices])).to(self.device)
            images = normalize(batch.permute(0, 3, 1, 2), self.preprocess.mean, self.preprocess.std)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            scores = augmented_probabilities(images, self._model_scores, self.tta)
            for slot, index in enumerate(indices):
                results[index] = undo_resize(scores[slot], prepared[index][1])
        return results

    def _model_scores(self, images: torch.Tensor) -> torch.Tensor:
        return self._scores(self.model(images))

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 1|C, h, w)`` -> probabilities ``(N, C, h, w)``."""
        logits = logits.float()
        if self.binary:
            foreground = torch.sigmoid(logits[:, :1])
            return torch.cat([1 - foreground, foreground], dim=1)
        return torch.softmax(logits, dim=1)

