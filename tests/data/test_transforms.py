"""Resize policies, their exact undo, normalisation and aligned augmentation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from segkit.data.transforms import (
    AugmentConfig,
    PreprocessConfig,
    build_train_transform,
    compute_geometry,
    normalize,
    resize_image,
    resize_sample,
)
from segkit.errors import SegkitError
from segkit.prediction.predictor import to_original_size as undo_resize
from segkit.visualize import PALETTE

SIZES = [(97, 131), (131, 97), (1, 1000), (1000, 1), (64, 64), (30, 40), (200, 90), (517, 389)]


def blocky_mask(height: int, width: int, classes: int = 4, seed: int = 0) -> np.ndarray:
    """A mask of large rectangles, so most pixels are far from a boundary."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    for label in range(1, classes):
        top, left = rng.integers(0, height), rng.integers(0, width)
        mask[top : top + max(1, height // 2), left : left + max(1, width // 2)] = label
    return mask


def near_boundary(mask: np.ndarray, radius: int, radius_x: int | None = None) -> np.ndarray:
    """Pixels with a different label within ``radius`` rows / ``radius_x`` columns (window max != min)."""
    radius_x = radius if radius_x is None else radius_x
    kernel = np.ones((2 * radius + 1, 2 * radius_x + 1), np.uint8)
    return cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)


@pytest.mark.parametrize("policy", ["letterbox", "resize"])
@pytest.mark.parametrize("size", SIZES)
def test_resize_then_undo_restores_original_size(size: tuple[int, int], policy: str) -> None:
    preprocess = PreprocessConfig(img_size=(64, 80), resize=policy)
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    resized, geometry = resize_image(image, preprocess)
    assert resized.shape == (64, 80, 3) and resized.dtype == np.uint8
    restored = undo_resize(torch.randn(5, 64, 80), geometry)
    assert restored.shape == (5, *size)


@pytest.mark.parametrize("size", SIZES)
def test_letterbox_pads_centred_with_pad_and_ignore_values(size: tuple[int, int]) -> None:
    preprocess = PreprocessConfig(img_size=(64, 64), pad_value=7, ignore_index=200)
    image = np.full((*size, 3), 100, np.uint8)
    mask = np.ones(size, np.uint8)
    resized_image, resized_mask = resize_sample(image, mask, preprocess)
    g = compute_geometry(*size, (64, 64), "letterbox")
    inside = np.zeros((64, 64), bool)
    inside[g.top : g.top + g.new_h, g.left : g.left + g.new_w] = True
    assert (resized_mask[inside] == 1).all() and (resized_mask[~inside] == 200).all()
    assert (resized_image[inside] == 100).all() and (resized_image[~inside] == 7).all()
    # aspect kept: one side fills the input, the other is centred (off by at most one pixel)
    assert g.new_h == 64 or g.new_w == 64
    assert abs((64 - g.new_h - g.top) - g.top) <= 1 and abs((64 - g.new_w - g.left) - g.left) <= 1
    assert g.scale == min(64 / size[0], 64 / size[1])
    assert abs(g.new_h - max(1.0, size[0] * g.scale)) <= 0.5 and abs(g.new_w - max(1.0, size[1] * g.scale)) <= 0.5


@pytest.mark.parametrize("policy", ["letterbox", "resize"])
@pytest.mark.parametrize("size", [(97, 131), (30, 40), (200, 90), (517, 389), (3, 1000)])
def test_mask_round_trip_matches_away_from_boundaries(size: tuple[int, int], policy: str) -> None:
    preprocess = PreprocessConfig(img_size=(128, 128), resize=policy)
    # thin images get vertical stripes: a 3-row image shrinks to one row
    mask = blocky_mask(*size) if min(size) > 3 else np.repeat(blocky_mask(1, size[1]), size[0], axis=0)
    image = np.zeros((*size, 3), np.uint8)
    _, resized = resize_sample(image, mask, preprocess)
    geometry = compute_geometry(*size, (128, 128), policy)
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(resized.astype(np.int64)), 256).permute(2, 0, 1).float()
    restored = undo_resize(one_hot, geometry).argmax(0).numpy().astype(np.uint8)
    assert restored.shape == size
    rows, columns = (int(np.ceil(o / n)) + 1 for o, n in zip(size, (geometry.new_h, geometry.new_w)))
    far = ~near_boundary(mask, rows, columns)
    assert far.mean() > 0.3
    np.testing.assert_array_equal(restored[far], mask[far])


def test_undo_ignores_padding() -> None:
    geometry = compute_geometry(50, 100, (64, 64), "letterbox")
    logits = torch.zeros(3, 64, 64)
    logits[2] = 10.0  # padding says class 2 ...
    logits[1, geometry.top : geometry.top + geometry.new_h, geometry.left : geometry.left + geometry.new_w] = 20.0
    restored = undo_resize(logits, geometry)
    assert restored.shape == (3, 50, 100)
    assert (restored.argmax(0) == 1).all()  # ... but only the image area comes back
    with pytest.raises(ValueError):
        undo_resize(torch.zeros(3, 32, 32), geometry)


def test_undo_interpolates_scores_smoothly() -> None:
    geometry = compute_geometry(10, 10, (20, 20), "resize")
    ramp = torch.linspace(0, 1, 20).repeat(20, 1)[None]
    restored = undo_resize(ramp, geometry)[0]
    assert torch.all(restored[:, 1:] > restored[:, :-1])  # bilinear, not nearest: strictly increasing


def test_crop_policy_keeps_native_size_at_scale_one_and_rescales_otherwise() -> None:
    preprocess = PreprocessConfig(img_size=(32, 32), resize="crop")
    image = np.zeros((45, 71, 3), np.uint8)
    resized, geometry = resize_image(image, preprocess)
    assert resized.shape == image.shape and (geometry.out_h, geometry.out_w) == (45, 71)
    assert undo_resize(torch.ones(2, 45, 71), geometry).shape == (2, 45, 71)
    half = PreprocessConfig(img_size=(32, 32), resize="crop", scale=0.5)
    resized, geometry = resize_image(image, half)
    assert resized.shape == (22, 36, 3) and (geometry.out_h, geometry.out_w) == (22, 36)
    assert undo_resize(torch.ones(2, 22, 36), geometry).shape == (2, 45, 71)


def test_normalize_matches_formula_for_single_and_batched_images() -> None:
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    image = torch.tensor([0, 128, 255], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2).contiguous()
    out = normalize(image, mean, std)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 2)
    expected = (torch.tensor([0, 128, 255]) / 255.0 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(out[:, 0, 0], expected)
    torch.testing.assert_close(normalize(image[None].repeat(2, 1, 1, 1), mean, std)[1], out)


def test_configs_round_trip_through_json_and_yaml() -> None:
    preprocess = PreprocessConfig(img_size=[96, 128], resize="crop", augment={"level": "light", "vflip": True})
    data = preprocess.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert PreprocessConfig.from_dict(data) == preprocess
    assert preprocess.img_size == (96, 128) and preprocess.augment.vflip and preprocess.augment.rotate == 5
    assert PreprocessConfig(img_size=48).img_size == (48, 48)
    assert PreprocessConfig(augment="none").augment == AugmentConfig.preset("none")
    # checkpoints written before augment/ignore_index existed still load
    assert PreprocessConfig.from_dict({"img_size": [8, 8], "resize": "resize"}).ignore_index == 255


@pytest.mark.parametrize(
    "bad",
    [
        {"resize": "stretch"},
        {"img_size": [0, 8]},
        {"std": [1, 0, 1]},
        {"mean": [0.5]},
        {"augment": "heavy"},
        {"color": 1},
    ],
)
def test_invalid_configs_raise_one_line_errors(bad: dict) -> None:
    with pytest.raises(SegkitError) as error:
        PreprocessConfig.from_dict(bad)
    assert "\n" not in str(error.value)


def colour_image(mask: np.ndarray) -> np.ndarray:
    return PALETTE[mask]


def mask_from_colours(image: np.ndarray, classes: int) -> np.ndarray:
    distances = np.abs(image[:, :, None, :].astype(int) - PALETTE[:classes].astype(int)).sum(-1)
    return distances.argmin(-1)


def test_augmentation_keeps_image_and_mask_aligned() -> None:
    preprocess = PreprocessConfig(
        img_size=(64, 64),
        augment=AugmentConfig(hflip=True, vflip=True, scale=(0.7, 1.3), rotate=30, translate=0.2, color_jitter=0),
    )
    transform = build_train_transform(preprocess, seed=3)
    mask = blocky_mask(64, 64, classes=5, seed=4)
    image = colour_image(mask)
    changed = 0
    for _ in range(20):
        out = transform(image=image, mask=mask)
        out_image, out_mask = out["image"], out["mask"]
        assert out_image.shape == (64, 64, 3) and out_mask.shape == (64, 64)
        changed += not np.array_equal(out_mask, mask)
        labelled = (out_mask != 255) & ~near_boundary(out_mask, radius=1)
        recovered = mask_from_colours(out_image, 5)
        assert (recovered[labelled] == out_mask[labelled]).mean() > 0.99
        # pixels the warp uncovered are ignored in the mask and padded in the image
        assert set(np.unique(out_mask)) <= set(range(5)) | {255}
    assert changed >= 10


def test_hflip_is_exact_and_flip_decisions_are_independent() -> None:
    preprocess = PreprocessConfig(
        img_size=(8, 8), augment=AugmentConfig.from_dict({"level": "none", "hflip": True, "vflip": True})
    )
    transform = build_train_transform(preprocess, seed=0)
    mask = np.arange(64, dtype=np.uint8).reshape(8, 8)
    image = np.repeat(mask[..., None], 3, axis=2)
    outcomes = set()
    for _ in range(40):
        out = transform(image=image, mask=mask)
        h_flipped = out["mask"][0, 0] in (mask[0, -1], mask[-1, -1])
        v_flipped = out["mask"][0, 0] in (mask[-1, 0], mask[-1, -1])
        expected = mask[:: -1 if v_flipped else 1, :: -1 if h_flipped else 1]
        np.testing.assert_array_equal(out["mask"], expected)
        np.testing.assert_array_equal(out["image"][..., 0], expected)
        outcomes.add((h_flipped, v_flipped))
    assert outcomes == {(False, False), (True, False), (False, True), (True, True)}


def test_same_seed_same_augmentation() -> None:
    preprocess = PreprocessConfig(img_size=(32, 32))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = blocky_mask(32, 32)
    first = [build_train_transform(preprocess, seed=11)(image=image, mask=mask)["image"] for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])


def test_rotate90_turns_square_inputs_and_refuses_others() -> None:
    preprocess = PreprocessConfig(img_size=(8, 8), augment={"level": "none", "rotate90": True})
    transform = build_train_transform(preprocess, seed=0)
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    mask = np.arange(64, dtype=np.uint8).reshape(8, 8)
    turns = set()
    for _ in range(40):
        out = transform(image=image, mask=mask)
        k = next(k for k in range(4) if np.array_equal(out["mask"], np.rot90(mask, k)))
        np.testing.assert_array_equal(out["image"], np.rot90(image, k))  # image and mask turn together
        turns.add(k)
    assert turns == {0, 1, 2, 3}
    with pytest.raises(SegkitError, match="rotate90 needs a square input"):
        build_train_transform(PreprocessConfig(img_size=(8, 16), augment={"level": "none", "rotate90": True}))
