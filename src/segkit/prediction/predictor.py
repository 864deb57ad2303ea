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

from segkit.data.io import read_image, to_rgb
from segkit.data.transforms import PreprocessConfig, normalize, resize_image, undo_resize
from segkit.device import resolve_device
from segkit.errors import SegkitError
from segkit.prediction.tiling import TileConfig, TilePlan, predict_tiled
from segkit.prediction.tta import TTAConfig, augmented_probabilities
from segkit.training.checkpoint import load_checkpoint
from segkit.visualize import PALETTE

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
    """A trained model with its preprocessing: image in, index mask at the image's size out.

    Attributes:
        model: the network, in eval mode on ``device``.
        classes: class names in index order.
        palette: ``(256, 3)`` uint8 colour table, the checkpoint's class colours first.
        binary: one sigmoid channel thresholded at ``threshold`` (else softmax argmax).
        threshold: probability above which a binary pixel is foreground (class 1).
        preprocess: resize policy, input size and normalisation from training.
        ignore_index: the label value ignored in training.
        device: where the model runs.
        tiling: when images are predicted window by window (default: automatic, see
            :class:`~segkit.prediction.tiling.TileConfig`).
        tta: test-time augmentation (default: none), a
            :class:`~segkit.prediction.tta.TTAConfig` or a string such as ``"flip+scale"``.
        crf: refine the probabilities with a dense CRF on the image (DeepLab v1/v2
            post-processing, :func:`~segkit.models.crf.dense_crf`).
        model_spec: the checkpoint's ``model`` entry (name, num_classes, in_channels, kwargs).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        classes: Sequence[str],
        preprocess: PreprocessConfig,
        *,
        binary: bool = False,
        threshold: float = 0.5,
        palette: np.ndarray | Sequence[Sequence[int]] | None = None,
        ignore_index: int = 255,
        device: str | torch.device = "auto",
        tiling: TileConfig | None = None,
        tta: TTAConfig | str | None = None,
        crf: bool = False,
        model_spec: dict[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        # NHWC convolutions are several times faster on CPU (benchmarks/); ONNX Runtime takes NCHW.
        self.channels_last = any(True for _ in model.parameters())
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.classes = list(classes)
        self.preprocess = preprocess
        self.binary = binary
        self.threshold = float(threshold)
        self.ignore_index = ignore_index
        self.palette = PALETTE.copy()
        if palette is not None and len(palette):
            colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[: len(self.palette)]
            self.palette[: len(colours)] = colours
        self.tiling = tiling or TileConfig()
        self.tta = tta if isinstance(tta, TTAConfig) else TTAConfig.parse(tta)
        self.crf = crf
        self.model_spec = dict(model_spec) if model_spec else {"name": type(model).__name__}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | dict[str, Any], device: str | torch.device = "auto") -> Predictor:
        """Build the model a checkpoint (path or loaded dict) describes and load its weights.

        A path ending in ``.onnx`` (written by ``segkit export``) runs in ONNX Runtime instead.

        Raises:
            SegkitError: unreadable checkpoint, missing entries, or weights that do not fit the model.
        """
        path = Path(checkpoint) if isinstance(checkpoint, (str, Path)) else None
        onnx_model = None
        if path is not None and path.suffix.lower() == ".onnx":
            from segkit.prediction.onnx_backend import OnnxRuntimeModel

            onnx_model = OnnxRuntimeModel(path, device)
            state, device = onnx_model.metadata, onnx_model.device
        else:
            state = load_checkpoint(path) if path is not None else checkpoint
        try:
            spec, classes = state["model"], list(state["classes"])
            name, outputs = spec["name"], spec["num_classes"]
            preprocess = PreprocessConfig.from_dict(dict(state["preprocess"]))
        except KeyError as error:
            raise SegkitError(path, f"checkpoint has no {error.args[0]!r} entry") from None
        except SegkitError as error:
            raise SegkitError(path, f"bad preprocess entry: {error.problem}") from None
        binary = bool(state.get("binary", False))
        expected = 1 if binary else len(classes)
        if outputs != expected:
            raise SegkitError(
                path,
                f"model has {outputs} output channels but the checkpoint's {len(classes)} classes "
                f"in {'binary' if binary else 'multi-class'} mode need {expected}",
            )
        model = onnx_model if onnx_model is not None else _torch_model(state, name, path)
        return cls(
            model,
            classes,
            preprocess,
            binary=binary,
            threshold=float(state.get("threshold", 0.5)),
            palette=state.get("palette"),
            ignore_index=int(state.get("ignore_index", preprocess.ignore_index)),
            device=device,
            model_spec=spec,
        )

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

    def predict_batch(self, images: Sequence[ImageInput], batch_size: int = 8) -> list[np.ndarray]:
        """Masks for many images, ``batch_size`` at a time (images are read one chunk at a time)."""
        return [mask for _, mask in self.iter_predict(images, batch_size)]

    def iter_predict(self, images: Sequence[ImageInput], batch_size: int = 8) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rgb_image, mask)`` per input, in order, decoding one chunk of inputs at a time."""
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


def _torch_model(state: dict[str, Any], name: str, path: Path | None) -> torch.nn.Module:
    """The model ``name`` as a checkpoint's ``model`` entry describes it, with the checkpoint's weights loaded."""
    from segkit.models import create_model

    spec = state["model"]
    if "state_dict" not in state:
        raise SegkitError(path, "checkpoint has no 'state_dict' entry")
    try:
        model = create_model(name, spec["num_classes"], spec.get("in_channels", 3), **spec.get("kwargs", {}))
    except SegkitError as error:
        raise SegkitError(path, error.problem) from None
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise SegkitError(path, f"weights do not fit model {name!r}: {first_line}") from None
    return model
