"""Training crops (segkit.data.sampling): padding, placement, and rare classes found."""

from __future__ import annotations

import numpy as np

from segkit.data.sampling import CropSampler, class_locations, rarity_weights


def test_crops_of_small_images_are_padded_with_ignore() -> None:
    sampler = CropSampler((40, 40), 0.0, np.zeros(2))
    image, mask = sampler(
        np.full((20, 60, 3), 9, np.uint8), np.ones((20, 60), np.uint8), None, np.random.default_rng(0)
    )
    assert image.shape == (40, 40, 3) and mask.shape == (40, 40)
    assert (mask == 255).sum() == 40 * 20 and (mask == 1).sum() == 40 * 20
    assert (image[mask == 255] == 0).all() and (image[mask == 1] == 9).all()


def test_oversampling_centres_crops_on_the_rare_class() -> None:
    mask = np.zeros((400, 400), np.uint8)
    mask[300:304, 50:54] = 1  # a 4x4 speck: 0.01 % of the pixels
    image = np.zeros((400, 400, 3), np.uint8)
    rng = np.random.default_rng(0)
    locations = class_locations(mask, 2, rng)
    assert set(locations) == {0, 1} and len(locations[1]) == 16
    share = [1 - 16 / 160000, 16 / 160000]
    plain = CropSampler((64, 64), 0.0, rarity_weights(share))
    forced = CropSampler((64, 64), 1.0, rarity_weights(share))
    hits_plain = sum((plain(image, mask, locations, rng)[1] == 1).any() for _ in range(400))
    hits_forced = sum((forced(image, mask, locations, rng)[1] == 1).any() for _ in range(400))
    assert hits_plain < 40  # a random 64x64 crop of 400x400 rarely meets the speck
    assert hits_forced > 380  # 1/sqrt(share) picks the speck ~99 % of the time; the crop always contains it


def test_rarity_weights_favour_rare_classes_and_skip_absent_ones() -> None:
    weights = rarity_weights([0.64, 0.04, 0.0, 0.32])
    assert weights[2] == 0 and weights[1] == 4 * weights[0]
