"""Tiled prediction: window geometry, Gaussian blending, agreement with whole-image prediction, memory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import dataset_path, tiny_checkpoint
from PIL import Image
from torch import nn

from prediction.test_predictor import CLASSES, squares
from segkit.checkpoint import ModelCard, save_checkpoint
from segkit.cli import main
from segkit.data.io import read_image
from segkit.data.transforms import PreprocessConfig, normalize
from segkit.errors import SegkitError
from segkit.prediction.predictor import Predictor
from segkit.prediction.tiling import (
    BlendBuffer,
    TileConfig,
    TilePlan,
    gaussian_weights,
    predict_tiled,
    window_starts,
)


class ConstantModel(nn.Module):
    """The same logits at every pixel, whatever the input."""

    LOGITS = (0.5, -1.0, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.tensor(self.LOGITS, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return logits.expand(x.shape[0], -1, *x.shape[-2:]).clone()


class PointwiseModel(nn.Module):
    """Logits that are a fixed linear function of each pixel's colour (no spatial context)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0] - x[:, 1], 2 * x[:, 1] - x[:, 2], x[:, 2] - 0.5 * x[:, 0]], dim=1)


class ShapeSpy(nn.Module):
    """Wraps a model and records the shape of every batch it sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def predictor(
    model: nn.Module, resize: str = "crop", img_size: tuple[int, int] = (32, 32), tta: str | None = None, **tiling: Any
) -> Predictor:
    preprocess = PreprocessConfig(img_size=img_size, resize=resize, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    card = ModelCard.create("probe", CLASSES, preprocess)
    return Predictor(model, card, device="cpu", tiling=TileConfig(**tiling), tta=tta)


def position_image(height: int, width: int, checker: bool = True) -> np.ndarray:
    """Every pixel's colour encodes where it is: ramps in x and y, plus (optionally) a fine checker."""
    y, x = np.mgrid[:height, :width]
    blue = ((x // 3 + y // 5) % 2) * 200 if checker else (x + y) * 127 // (height + width)
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), blue], -1).astype(np.uint8)


@pytest.mark.parametrize(
    ("length", "window", "stride"),
    [(100, 32, 24), (33, 32, 24), (32, 32, 24), (5, 32, 24), (1000, 96, 72), (97, 10, 1)],
)
def test_windows_cover_every_pixel_with_the_overlap_asked_for(length: int, window: int, stride: int) -> None:
    starts = window_starts(length, window, stride)
    assert starts[0] == 0
    if length <= window:
        assert starts == [0]  # one (padded) window
        return
    assert starts[-1] + window == length  # the last window is flush with the edge
    steps = np.diff(starts)
    assert (steps > 0).all() and (steps <= stride).all()  # overlap >= window - stride everywhere
    assert len(starts) == math.ceil((length - window) / stride) + 1
    covered = np.zeros(length, int)
    for start in starts:
        covered[start : start + window] += 1
    assert (covered >= 1).all()


@pytest.mark.parametrize(("size", "window"), [((130, 97), (48, 64)), ((20, 300), (64, 64)), ((7, 9), (32, 32))])
def test_plan_windows_tile_the_padded_image(size: tuple[int, int], window: tuple[int, int]) -> None:
    plan = TilePlan.create(*size, window, overlap=0.25, batch_size=4)
    padded_h, padded_w = plan.padded_size
    assert (padded_h, padded_w) == (max(size[0], window[0]), max(size[1], window[1]))
    coverage = np.zeros(plan.padded_size, int)
    for top, left in plan.positions:
        assert 0 <= top <= padded_h - window[0] and 0 <= left <= padded_w - window[1]
        coverage[top : top + window[0], left : left + window[1]] += 1
    assert (coverage >= 1).all()
    assert len(plan.positions) == len(plan.tops) * len(plan.lefts)


def test_aligned_windows_keep_to_the_grid_and_cover_the_padded_image() -> None:
    plan = TilePlan.create(2048, 1817, (1024, 1024), overlap=0.25, batch_size=1, align=32)
    assert plan.lefts == [0, 384, 800] and plan.tops == [0, 512, 1024]
    assert plan.padded_size == (2048, 1824)  # the width padded to the grid, as the network pads a whole image
    assert TilePlan.create(100, 100, (48, 48), 0.25, 1, align=32).padded_size == (100, 100)  # 48 % 32: not aligned
    for length, window, stride in [(1824, 1024, 768), (160, 64, 64), (2080, 96, 72)]:
        starts = window_starts(length, window, stride, align=32)
        assert all(start % 32 == 0 for start in starts) and starts[-1] + window == length
        assert (np.diff(starts) <= window).all()  # no gap between neighbours


def test_tiled_crop_predictions_match_the_whole_image_off_the_grid() -> None:
    """Windows at offsets that are not multiples of the network's stride see another pooling grid than
    the whole image; near-ties then flip (benchmarks/tile_memory.py measures it on a stride-32 U-Net)."""
    unet = Predictor.from_checkpoint(
        tiny_checkpoint(resize="crop", img_size=32), device="cpu", tiling=TileConfig(auto=False)
    )
    image, _ = squares(200, 237)  # sides that are not multiples of 32
    image = (image + np.random.default_rng(1).integers(-30, 30, image.shape)).clip(0, 255).astype(np.uint8)
    spread_head(unet, image)
    whole = unet.predict(image)
    assert (np.bincount(whole.ravel(), minlength=3) > 0.1 * whole.size).all()
    automatic = Predictor(unet.model, unet.card, device="cpu")
    plan = automatic.tile_plan(*image.shape[:2])
    assert plan is not None and all(left % 32 == 0 for left in plan.lefts) and all(top % 32 == 0 for top in plan.tops)
    assert (automatic.predict(image) == whole).mean() >= 0.995


def test_gaussian_window_peaks_in_the_middle_and_stays_positive() -> None:
    for length in (1, 2, 31, 64):
        weights = gaussian_weights(length)
        assert weights.shape == (length,) and weights.dtype == np.float32 and (weights > 0).all()
        np.testing.assert_allclose(weights, weights[::-1])
        assert weights.max() == weights[(length - 1) // 2] and weights.max() <= 1.0
    assert float(gaussian_weights(64)[0]) == pytest.approx(math.exp(-0.5 * (31.5 / 8) ** 2), rel=1e-5)


@pytest.mark.parametrize("size", [(100, 75), (20, 90), (11, 13)])
def test_constant_logits_come_back_unchanged_everywhere(size: tuple[int, int]) -> None:
    tiled = predictor(ConstantModel(), size=(32, 32), overlap=0.5)
    probabilities = tiled.predict_proba(np.zeros((*size, 3), np.uint8))
    expected = torch.softmax(torch.tensor(ConstantModel.LOGITS), 0).numpy()
    assert probabilities.shape == (3, *size)
    np.testing.assert_allclose(probabilities, np.broadcast_to(expected[:, None, None], probabilities.shape), atol=1e-6)


@pytest.mark.parametrize(("size", "window", "overlap"), [((90, 131), (32, 32), 0.25), ((64, 40), (24, 40), 0.5)])
def test_blending_is_seamless_for_a_position_dependent_image(
    size: tuple[int, int], window: tuple[int, int], overlap: float
) -> None:
    image = position_image(*size)
    whole = predictor(PointwiseModel(), auto=False).predict_proba(image)
    tiled = predictor(PointwiseModel(), size=window, overlap=overlap).predict_proba(image)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)  # any misplaced window would show


def test_letterbox_windows_reach_the_network_at_the_training_scale() -> None:
    spy = ShapeSpy(PointwiseModel())
    tiled = predictor(spy, resize="letterbox", img_size=(32, 32), size=(64, 64), overlap=0.25, batch_size=3)
    image = position_image(150, 100, checker=False)
    probabilities = tiled.predict_proba(image)
    assert probabilities.shape == (3, 150, 100)
    assert {shape[-2:] for shape in spy.shapes} == {(32, 32)}  # every 64-pixel window shrunk by 2
    whole = predictor(PointwiseModel(), auto=False).predict_proba(image)  # same pointwise model at full size
    assert np.abs(probabilities - whole).mean() < 0.01  # only resampling differences


def test_tiled_and_whole_unet_masks_agree() -> None:
    checkpoint = tiny_checkpoint(resize="crop", img_size=32)
    unet = Predictor.from_checkpoint(checkpoint, device="cpu", tiling=TileConfig(auto=False))
    image, _ = squares(120, 150)
    image = (image + np.random.default_rng(0).integers(-30, 30, image.shape)).clip(0, 255).astype(np.uint8)
    spread_head(unet, image)
    whole = unet.predict(image)
    assert (np.bincount(whole.ravel(), minlength=3) > 1000).all()  # all classes present: a real comparison
    tiled = Predictor(unet.model, unet.card, device="cpu", tiling=TileConfig((64, 64), overlap=0.25, batch_size=2))
    assert (tiled.predict(image) == whole).mean() >= 0.995


def test_automatic_tiling_agrees_on_a_real_aerial_image(shared_datasets: Path) -> None:
    image = read_image(dataset_path(shared_datasets, "dubai_aerial", "images", "tile8_image_part_001.jpg"))
    image = image[:400, :560]  # a part of the 2149x1480 photo, to stay fast
    unet = Predictor.from_checkpoint(
        tiny_checkpoint(resize="crop", img_size=32), device="cpu", tiling=TileConfig(auto=False)
    )
    spread_head(unet, image[:128, :128])
    whole = unet.predict(image)
    assert (np.bincount(whole.ravel(), minlength=3) > 0.05 * whole.size).all()
    automatic = Predictor(unet.model, unet.card, device="cpu")  # crop checkpoint, image > 4 x 32: 128-pixel windows
    assert automatic.tiling.window_for(*image.shape[:2], automatic.preprocess) == (128, 128)
    assert (automatic.predict(image) == whole).mean() >= 0.995


def spread_head(unet: Predictor, image: np.ndarray) -> None:
    """Scale the random U-Net's output layer so that its logits differ enough for every class to win somewhere."""
    head = unet.model.head
    features: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    pixels = torch.tensor(image).permute(2, 0, 1)[None]
    with torch.no_grad():
        unet.model(normalize(pixels, unet.preprocess.mean, unet.preprocess.std))
        hook.remove()
        head.weight.mul_(10)
        head.bias.zero_()
        head.bias.copy_(-head(features[0]).mean((0, 2, 3)))


def test_memory_is_one_buffer_at_image_size_whatever_the_window_count() -> None:
    big = [TilePlan.create(20_000, 20_000, (512, 512), overlap, batch_size=4) for overlap in (0.0, 0.5, 0.9)]
    counts = [len(plan.positions) for plan in big]
    assert counts[0] < counts[1] < counts[2]
    expected = 4 * (3 * 20_000 * 20_000 + 20_000 + 20_000)  # float32 sums + separable weights
    assert {plan.buffer_bytes(3) for plan in big} == {expected}
    assert {plan.batch_bytes(3) for plan in big} == {4 * 512 * 512 * (3 + 4 * 3)}

    plan = TilePlan.create(70, 90, (32, 32), overlap=0.5, batch_size=3)
    for ones in (np.ones, torch.ones):  # the buffer is made in the windows' own library
        buffer = BlendBuffer(plan, like=ones((3, 32, 32)))
        assert tuple(buffer.sums.shape) == (3, 70, 90) and buffer.nbytes == plan.buffer_bytes(3)
        calls: list[int] = []

        def predict(windows: list[np.ndarray], calls: list[int] = calls, ones: Any = ones) -> list[Any]:
            calls.append(len(windows))
            assert all(window.shape == (32, 32, 3) for window in windows)
            return [ones((3, 32, 32)) for _ in windows]

        result = predict_tiled(np.zeros((70, 90, 3), np.uint8), predict, plan)
        assert (
            max(calls) <= 3 and sum(calls) == len(plan.positions) and len(calls) == math.ceil(len(plan.positions) / 3)
        )
        assert type(result) is type(buffer.sums)
        np.testing.assert_allclose(np.asarray(result), np.ones((3, 70, 90)), rtol=1e-6)


def test_automatic_tiling_only_for_crop_checkpoints_larger_than_four_crops() -> None:
    crop = PreprocessConfig(img_size=(32, 48), resize="crop")
    letterbox = PreprocessConfig(img_size=(32, 48), resize="letterbox")
    auto = TileConfig()
    assert auto.window_for(128, 192, crop) is None
    assert auto.window_for(129, 20, crop) == (128, 192) and auto.batch_for() == 1
    assert auto.window_for(129, 20, PreprocessConfig(img_size=(32, 48), resize="crop", scale=0.5)) is None
    assert TileConfig((40, 40), batch_size=3).batch_for() == 3
    assert auto.window_for(5000, 5000, letterbox) is None
    assert TileConfig((40, 40)).window_for(10, 10, letterbox) == (40, 40)
    assert TileConfig(auto=False).window_for(5000, 5000, crop) is None
    with pytest.raises(SegkitError):
        TileConfig(overlap=1.0)
    with pytest.raises(SegkitError):
        TileConfig((0, 5))

    spy = ShapeSpy(PointwiseModel())
    crop_predictor = predictor(spy, resize="crop", img_size=(8, 8))
    masks = crop_predictor.predict_batch([position_image(100, 70), position_image(30, 20)], batch_size=2)
    assert [mask.shape for mask in masks] == [(100, 70), (30, 20)]
    assert (32, 32) in {shape[-2:] for shape in spy.shapes}  # the large image went window by window
    assert (30, 20) in {shape[-2:] for shape in spy.shapes}  # the small one whole


def test_cli_tile_and_overlap(tmp_path: Path) -> None:
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(tiny_checkpoint(resize="crop", img_size=16), checkpoint)
    (tmp_path / "in").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (70, 45, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in" / "a.png")
    for tile in ("24", "20x30", "0"):
        out = tmp_path / f"out{tile}"
        args = ["predict", str(checkpoint), str(tmp_path / "in"), "--out", str(out), "--device", "cpu"]
        assert main([*args, "--tile", tile, "--overlap", "0.5", "--batch-size", "2"]) == 0
        assert Image.open(out / "a.png").size == (45, 70)
    for bad in (["--tile", "0x5"], ["--tile", "big"], ["--overlap", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", str(checkpoint), str(tmp_path / "in"), "--out", str(tmp_path / "x"), *bad])
        assert exit_info.value.code == 2


def test_network_pixels_count_what_the_network_computes() -> None:
    """Prediction time follows the network's pixels: a letterboxed image costs its input size at any size; a
    tiled one its windows (overlapping, padded); a crop model's small image its own pixels at the crop scale."""
    tiling = TileConfig()
    letterbox = PreprocessConfig(img_size=(256, 256), resize="letterbox")
    assert tiling.network_pixels(2000, 3000, letterbox) == tiling.network_pixels(100, 80, letterbox) == 256 * 256
    crops = PreprocessConfig(img_size=(256, 256), resize="crop", scale=1.0)
    assert tiling.network_pixels(500, 600, crops) == 500 * 600  # under one automatic window: predicted whole
    plan = tiling.plan(2061, 1817, crops)
    assert plan is not None and len(plan.positions) == 9 and plan.window == (1024, 1024)
    assert tiling.network_pixels(2061, 1817, crops) == 9 * 1024 * 1024
    half = PreprocessConfig(img_size=(256, 256), resize="crop", scale=0.5)
    assert tiling.network_pixels(2000, 1816, half) == 1000 * 908  # inside one 2048-pixel window: whole, halved
    assert tiling.network_pixels(2061, 1817, half) == 2 * 1024 * 1024  # two 2048-pixel windows, each halved
