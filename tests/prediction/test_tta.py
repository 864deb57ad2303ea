"""Test-time augmentation: flips and scales averaged, undone exactly, combined with batching and tiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint
from PIL import Image
from torch import nn

from prediction.test_predictor import CLASSES
from prediction.test_tiling import PointwiseModel, ShapeSpy, position_image, predictor
from segkit.checkpoint import save_checkpoint
from segkit.cli import main
from segkit.errors import SegkitError
from segkit.prediction.predictor import Predictor
from segkit.prediction.tta import TTA_SCALES, TTAConfig, augmented_probabilities


class LeftRightModel(nn.Module):
    """Not flip-symmetric: favours class 1 on the left of its input and class 2 at the top."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        ramp_x = torch.linspace(2, -2, width).expand(x.shape[0], height, width)
        ramp_y = torch.linspace(2, -2, height)[:, None].expand(x.shape[0], height, width)
        return torch.stack([x[:, 0], ramp_x + x[:, 1], ramp_y + x[:, 2]], dim=1)


def test_parse_and_name() -> None:
    assert TTAConfig.parse(None) == TTAConfig.parse("none") == TTAConfig()
    assert TTAConfig.parse("flip") == TTAConfig(hflip=True)
    both = TTAConfig.parse("flip+scale")
    assert both.hflip and not both.vflip and both.scales == TTA_SCALES
    assert len(both.passes()) == 6 and len(TTAConfig.parse("flip+vflip+scale").passes()) == 12
    assert str(both) == "flip+scale" and str(TTAConfig()) == "none"
    assert TTAConfig.parse(str(TTAConfig.parse("vflip+flip"))) == TTAConfig(hflip=True, vflip=True)
    with pytest.raises(SegkitError, match="rotate"):
        TTAConfig.parse("flip+rotate")


def test_flip_gives_the_mean_of_the_plain_and_the_flipped_pass() -> None:
    image = position_image(37, 52)
    plain = predictor(LeftRightModel(), auto=False).predict_proba(image)
    flipped = predictor(LeftRightModel(), auto=False).predict_proba(image[:, ::-1].copy())[:, :, ::-1]
    assert np.abs(plain - flipped).max() > 0.1  # the model really is not flip-symmetric
    tta = predictor(LeftRightModel(), auto=False, tta="flip")
    np.testing.assert_allclose(tta.predict_proba(image), (plain + flipped) / 2, atol=1e-6)


def test_vertical_flip_undoes_itself_too() -> None:
    images = torch.randn(2, 3, 9, 14)
    model = LeftRightModel()

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(x), 1)

    expected = (probabilities(images) + probabilities(images.flip(2)).flip(2)) / 2
    got = augmented_probabilities(images, probabilities, TTAConfig(vflip=True))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("resize", ["crop", "resize", "letterbox"])
def test_symmetric_model_is_unchanged_by_flips(resize: str) -> None:
    image = position_image(41, 30)
    plain = predictor(PointwiseModel(), resize=resize, auto=False).predict_proba(image)
    tta = predictor(PointwiseModel(), resize=resize, auto=False, tta="flip+vflip")
    np.testing.assert_allclose(tta.predict_proba(image), plain, atol=1e-5)


@pytest.mark.parametrize("resize", ["crop", "letterbox"])
def test_scales_run_at_each_size_and_come_back_at_the_original_size(resize: str) -> None:
    spy = ShapeSpy(PointwiseModel())
    tta = predictor(spy, resize=resize, img_size=(32, 48), auto=False, tta="flip+scale")
    image = np.full((45, 61, 3), (200, 40, 90), np.uint8)
    image[5:40, 30:] = (10, 220, 60)
    probabilities = tta.predict_proba(image)
    assert probabilities.shape == (3, 45, 61)
    assert len(spy.shapes) == 6
    network = (45, 61) if resize == "crop" else (32, 48)
    sizes = {shape[-2:] for shape in spy.shapes}
    assert sizes == {tuple(max(1, round(side * scale)) for side in network) for scale in TTA_SCALES}
    plain = predictor(PointwiseModel(), resize=resize, img_size=(32, 48), auto=False).predict_proba(image)
    # resampling blurs the colour edge (and the letterbox padding) a little; the classes stay
    assert np.abs(probabilities - plain).mean() < 0.01
    np.testing.assert_array_equal(probabilities.argmax(0), plain.argmax(0))


def test_tta_with_tiling_and_batches() -> None:
    spy = ShapeSpy(PointwiseModel())
    tiled = predictor(spy, size=(24, 24), overlap=0.25, batch_size=2, tta="flip")
    images = [position_image(50, 40), position_image(10, 70)]
    masks = tiled.predict_batch(images, batch_size=2)
    assert [mask.shape for mask in masks] == [(50, 40), (10, 70)]
    assert all(shape[0] <= 2 and shape[-2:] == (24, 24) for shape in spy.shapes)
    windows = 3 * 2 + 1 * 4  # 50x40 -> 3 rows x 2 columns; 10x70 (padded to 24 high) -> 1 x 4
    assert sum(shape[0] for shape in spy.shapes) == 2 * windows  # two passes per window
    plain = predictor(PointwiseModel(), auto=False).predict_batch(images)
    for mask, expected in zip(masks, plain):
        np.testing.assert_array_equal(mask, expected)


def test_binary_checkpoint_with_tta(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(["background", "crack"], binary=True)
    binary = Predictor.from_checkpoint(checkpoint, device="cpu", tta=TTAConfig.parse("flip+scale"))
    image = np.random.default_rng(1).integers(0, 256, (27, 35, 3), dtype=np.uint8)
    probabilities = binary.predict_proba(image)
    assert probabilities.shape == (2, 27, 35)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(binary.predict(image), (probabilities[1] > binary.threshold).astype(np.uint8))


def test_cli_tta(tmp_path: Path) -> None:
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(tiny_checkpoint(), checkpoint)
    pixels = np.random.default_rng(0).integers(0, 256, (33, 21, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    args = ["predict", str(checkpoint), str(tmp_path / "a.png"), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "out"), "--tta", "flip+scale"]) == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert mask.shape == (33, 21) and mask.max() < len(CLASSES)
    assert main([*args, "--out", str(tmp_path / "bad"), "--tta", "mirror"]) == 2
    assert not (tmp_path / "bad").exists()


def test_crf_option_refines_predictions_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`segkit predict --crf` runs the dense CRF on each image's probabilities at the original size."""
    import segkit.prediction.crf as crf
    from segkit.checkpoint import save_checkpoint
    from segkit.data.io import read_mask_file

    calls = []
    original = crf.dense_crf

    def spy(probabilities, image, **options):
        calls.append((tuple(probabilities.shape), image.shape))
        return original(probabilities, image, **options)

    monkeypatch.setattr(crf, "dense_crf", spy)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(tiny_checkpoint(), checkpoint)
    image = np.zeros((37, 53, 3), np.uint8)
    image[:, 20:] = 230
    Image.fromarray(image).save(tmp_path / "img.png")
    assert main(["predict", str(checkpoint), str(tmp_path / "img.png"), "--out", str(tmp_path / "crf"), "--crf"]) == 0
    assert calls == [((len(CLASSES), 37, 53), (37, 53, 3))]
    refined, _ = read_mask_file(tmp_path / "crf" / "img.png")
    assert refined.shape == (37, 53)
