"""Predictor: checkpoints in, masks at the original image size out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import dataset_path, tiny_checkpoint
from PIL import Image
from torch import nn

from segkit.checkpoint import ModelCard, save_checkpoint
from segkit.data.sources import open_source
from segkit.data.transforms import PreprocessConfig
from segkit.errors import SegkitError
from segkit.evaluation.confusion import ConfusionMatrix
from segkit.evaluation.evaluate import evaluate_checkpoint
from segkit.prediction.predictor import Predictor, as_rgb

CLASSES = ["background", "red", "blue"]  # tiny_checkpoint()'s classes


class ColourModel(nn.Module):
    """Logits that say 'red' where the (normalised) red channel is high, 'blue' where blue is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.full_like(x[:, 0], 3.0), 4 * x[:, 0] - 4 * x[:, 2], 4 * x[:, 2] - 4 * x[:, 0]], dim=1)


def colour_predictor(resize: str = "letterbox") -> Predictor:
    preprocess = PreprocessConfig(img_size=(48, 64), resize=resize, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return Predictor(ColourModel(), ModelCard.create("colour", CLASSES, preprocess), device="cpu")


def squares(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A gray image with a red and a blue rectangle, and its true mask."""
    image = np.full((height, width, 3), 128, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 8 : height // 2, width // 8 : width // 2] = 1
    mask[height // 2 : height - height // 8, width // 2 : width - width // 8] = 2
    image[mask == 1] = (230, 20, 20)
    image[mask == 2] = (20, 20, 230)
    return image, mask


@pytest.mark.parametrize("resize", ["letterbox", "resize", "crop"])
@pytest.mark.parametrize("size", [(97, 131), (64, 48), (30, 200), (201, 33)])
def test_masks_come_back_at_the_original_size_and_place(resize: str, size: tuple[int, int]) -> None:
    image, truth = squares(*size)
    mask = colour_predictor(resize).predict(image)
    assert mask.shape == size and mask.dtype == np.uint8
    assert (mask == truth).mean() > 0.95  # only boundary pixels may differ


def test_checkpoint_unet_predicts_at_every_size(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(tiny_checkpoint(), path)
    predictor = Predictor.from_checkpoint(path, device="cpu")
    assert predictor.classes == CLASSES and not predictor.binary and not predictor.model.training
    assert predictor.preprocess.img_size == (32, 32)
    assert predictor.palette.shape == (256, 3) and (predictor.palette[255] == 255).all()
    sizes = [(17, 23), (40, 40), (5, 90), (64, 33)]
    images = [np.random.default_rng(i).integers(0, 256, (*s, 3), dtype=np.uint8) for i, s in enumerate(sizes)]
    masks = predictor.predict_batch(images, batch_size=3)
    assert [m.shape for m in masks] == sizes
    assert all(m.max() < len(CLASSES) for m in masks)
    for image, mask in zip(images, masks):  # batching does not change the answer
        probabilities = predictor.predict_proba(image)
        np.testing.assert_array_equal(mask, probabilities.argmax(0))


def test_probabilities_sum_to_one_at_the_original_size() -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint(), device="cpu")
    probabilities = predictor.predict_proba(np.zeros((21, 37, 3), np.uint8))
    assert probabilities.shape == (3, 21, 37) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)


def test_binary_mode_thresholds_the_foreground_probability() -> None:
    checkpoint = tiny_checkpoint(["background", "crack"], binary=True)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    assert predictor.binary and predictor.threshold == 0.5
    image = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    probabilities = predictor.predict_proba(image)
    assert probabilities.shape == (2, 30, 50)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-6)
    for threshold in (0.0, float(np.median(probabilities[1])), 1.0):
        predictor = Predictor.from_checkpoint(checkpoint, device="cpu", threshold=threshold)
        np.testing.assert_array_equal(predictor.predict(image), (probabilities[1] > threshold).astype(np.uint8))


def test_image_files_gray_rgba_and_exif_rotated(tmp_path: Path) -> None:
    predictor = colour_predictor()
    Image.fromarray(np.full((25, 35), 90, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.zeros((26, 36, 4), np.uint8)).save(tmp_path / "rgba.png")
    assert predictor.predict(tmp_path / "gray.png").shape == (25, 35)
    assert predictor.predict(str(tmp_path / "rgba.png")).shape == (26, 36)
    assert predictor.predict(np.zeros((12, 13), np.uint8)).shape == (12, 13)
    assert predictor.predict(Image.open(tmp_path / "gray.png")).shape == (25, 35)

    # stored 40 wide x 30 high, red in the top-left corner; orientation 6 shows it rotated 90 degrees clockwise
    stored, _ = squares(30, 40)
    stored[:] = 128
    stored[:10, :10] = (230, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    mask = predictor.predict(tmp_path / "rotated.jpg")
    assert mask.shape == (40, 30)  # the displayed orientation
    assert (mask[:10, -10:] == 1).mean() > 0.9 and (mask[:, :15] == 0).all()  # red now top-right
    np.testing.assert_array_equal(predictor.predict(Image.open(tmp_path / "rotated.jpg")), mask)


def test_as_rgb_rejects_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        as_rgb(np.zeros((4, 4), np.float32))
    with pytest.raises(TypeError):
        as_rgb(42)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(SegkitError, match="broken.png"):
        as_rgb(tmp_path / "broken.png")


def test_bad_checkpoints_raise_segkit_errors(tmp_path: Path) -> None:
    state = tiny_checkpoint().to_dict()
    state["card"]["classes"] = ["a", "b"]  # 3 output channels for 2 classes
    torch.save(state, tmp_path / "classes.pt")
    with pytest.raises(SegkitError, match="3 output channels"):
        Predictor.from_checkpoint(tmp_path / "classes.pt", device="cpu")
    state = tiny_checkpoint().to_dict()
    state["card"]["model"]["kwargs"]["base_channels"] = 8  # weights of a 4-channel U-Net
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(SegkitError, match=r"bad.pt: weights do not fit model 'unet'"):
        Predictor.from_checkpoint(tmp_path / "bad.pt", device="cpu")
    state = tiny_checkpoint().to_dict()
    del state["card"]["preprocess"]
    torch.save(state, tmp_path / "nopre.pt")
    with pytest.raises(SegkitError, match="no 'preprocess' entry"):
        Predictor.from_checkpoint(tmp_path / "nopre.pt", device="cpu")
    with pytest.raises(SegkitError, match="not found"):
        Predictor.from_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------- evaluate_checkpoint


def write_dataset(root: Path, sizes: list[tuple[int, int]], classes: list[str] = CLASSES) -> list[np.ndarray]:
    """An images/ + masks/ folder with class_names.txt; masks hold every class and some ignore pixels."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "class_names.txt").write_text("\n".join(classes) + "\n")
    masks = []
    for index, (height, width) in enumerate(sizes):
        image, mask = squares(height, width)
        mask[0, :] = 255
        Image.fromarray(image).save(root / "images" / f"img{index}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{index}.png")
        masks.append(mask)
    return masks


def expected_matrix(predictor: Predictor, root: Path, count: int) -> np.ndarray:
    matrix = ConfusionMatrix(len(CLASSES))
    for index in range(count):
        truth = np.asarray(Image.open(root / "masks" / f"img{index}.png"))
        matrix.update(predictor.predict(root / "images" / f"img{index}.png"), truth)
    return matrix.matrix


def test_evaluate_checkpoint_scores_original_size_predictions(tmp_path: Path) -> None:
    sizes = [(40, 60), (33, 17), (64, 64)]
    masks = write_dataset(tmp_path / "data", sizes)
    checkpoint = tiny_checkpoint()
    metrics = evaluate_checkpoint(checkpoint, tmp_path / "data", batch_size=2, device="cpu")
    assert metrics["num_images"] == 3 and list(metrics["per_class"]) == CLASSES
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.sum() == sum(int((mask != 255).sum()) for mask in masks)  # every labelled original pixel
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    np.testing.assert_array_equal(matrix, expected_matrix(predictor, tmp_path / "data", 3))
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0


def test_evaluate_checkpoint_uses_the_validation_split(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data" / "train", [(20, 20)] * 3)
    write_dataset(tmp_path / "data" / "val", [(24, 30)] * 2)
    assert evaluate_checkpoint(tiny_checkpoint(), tmp_path / "data", device="cpu")["num_images"] == 2
    assert evaluate_checkpoint(tiny_checkpoint(), tmp_path / "data", device="cpu", split="train")["num_images"] == 3


def test_evaluate_checkpoint_accepts_an_opened_source_and_checks_classes(tmp_path: Path) -> None:
    class Source:
        classes = ["bg", "x", "y"]

        def __len__(self) -> int:
            return 1

        def load(self, index: int) -> Any:
            image, mask = squares(16, 16)
            return SimpleNamespace(image=image, mask=mask, name="s")

    assert evaluate_checkpoint(tiny_checkpoint(), Source(), device="cpu")["num_images"] == 1
    write_dataset(tmp_path / "two", [(10, 10)], classes=["background", "thing"])
    with pytest.raises(
        SegkitError, match=r"2 classes \(background, thing\) but the checkpoint has 3 \(background, red, blue\)"
    ):
        evaluate_checkpoint(tiny_checkpoint(), tmp_path / "two", device="cpu")


def test_real_images_predict_and_evaluate_at_their_own_size(shared_datasets: Path) -> None:
    source = open_source(dataset_path(shared_datasets, "crackforest"))
    source.samples = source.samples[:3]
    checkpoint = tiny_checkpoint(list(source.classes), binary=True)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    image_file = source.samples[0].image
    assert predictor.predict(image_file).shape == Image.open(image_file).size[::-1]
    metrics = evaluate_checkpoint(checkpoint, source, device="cpu")
    truth_pixels = sum(int((source.load(i).mask != 255).sum()) for i in range(3))
    assert metrics["num_images"] == 3 and np.asarray(metrics["confusion_matrix"]).sum() == truth_pixels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_only_the_uint8_masks_come_back_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resize undo, TTA, tiling and the mask step stay on the GPU; the masks match the CPU's."""
    from segkit.prediction.tiling import TileConfig
    from segkit.prediction.torch_ops import TorchOps

    checkpoint = tiny_checkpoint(resize="crop", img_size=32, zero_head_bias=True)
    rng = np.random.default_rng(0)
    images = [squares(*size)[0] for size in ((120, 150), (64, 48), (300, 200))]
    images = [(image + rng.integers(-20, 20, image.shape)).clip(0, 255).astype(np.uint8) for image in images]
    options = {"tta": "flip+scale", "tiling": TileConfig((96, 96), overlap=0.25, batch_size=2)}
    expected = Predictor.from_checkpoint(checkpoint, device="cpu", **options).predict_batch(images)
    copies: list[torch.dtype] = []
    to_numpy = TorchOps.to_numpy

    def spy(array: torch.Tensor) -> np.ndarray:
        copies.append(array.dtype)
        return to_numpy(array)

    monkeypatch.setattr(TorchOps, "to_numpy", staticmethod(spy))
    gpu = Predictor.from_checkpoint(checkpoint, device="cuda", **options)
    masks = gpu.predict_batch(images, batch_size=2)
    assert copies == [torch.uint8] * len(images)
    for mask, cpu_mask in zip(masks, expected):
        assert (mask == cpu_mask).mean() >= 0.999


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("policy", ["letterbox", "resize", "crop"])
@pytest.mark.parametrize("size", [(97, 131), (30, 40), (200, 90), (16, 160)])
def test_to_original_size_undoes_the_resize_policy(library: str, policy: str, size: tuple[int, int]) -> None:
    """One-hot scores of the resized mask come back as the original mask, padding left out, in either library."""
    from segkit.data.transforms import compute_geometry, resize_sample
    from segkit.prediction.predictor import to_original_size

    _, truth = squares(*size)
    preprocess = PreprocessConfig(img_size=(64, 80), resize=policy, ignore_index=3)
    _, resized = resize_sample(np.zeros((*size, 3), np.uint8), truth, preprocess)
    geometry = compute_geometry(*size, (64, 80), policy)
    scores = np.eye(4, dtype=np.float32)[resized].transpose(2, 0, 1)  # class 3 = the padding
    scores = torch.from_numpy(scores) if library == "torch" else scores
    restored = np.asarray(to_original_size(scores, geometry)).argmax(0)
    assert restored.shape == size and not (restored == 3).any()
    accurate = (restored == truth).mean()
    assert accurate == 1.0 if policy == "crop" else accurate > 0.9  # only class boundaries move by resampling
    with pytest.raises(ValueError, match="geometry expects"):
        to_original_size(scores[:, 1:], geometry)
