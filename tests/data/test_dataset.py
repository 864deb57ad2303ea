"""SegmentationDataset: shapes and dtypes, caching, augmentation streams, class counts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import dataset_path
from torch.utils.data import DataLoader

import segkit.data.dataset as dataset_module
from segkit.data.dataset import DecodedSource, SegmentationDataset, class_pixel_counts
from segkit.data.sources import open_source
from segkit.data.transforms import AugmentConfig, PreprocessConfig
from segkit.errors import SegkitError


@dataclass
class FakeSample:
    image: np.ndarray
    mask: np.ndarray
    name: str


class FakeSource:
    """A DataSource stand-in: images of the given sizes, masks with one square of class 1 or 2."""

    def __init__(self, sizes: list[tuple[int, int]], classes: tuple[str, ...] = ("bg", "a", "b")) -> None:
        self.classes = list(classes)
        self.sizes = sizes
        self.loads = 0

    def __len__(self) -> int:
        return len(self.sizes)

    def load(self, index: int) -> FakeSample:
        self.loads += 1
        height, width = self.sizes[index]
        rng = np.random.default_rng(index)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        mask[: height // 2, : width // 2] = 1 + index % 2
        return FakeSample(image, mask, f"sample{index}")


def preprocess(**kwargs) -> PreprocessConfig:
    return PreprocessConfig(**{"img_size": (32, 48), **kwargs})


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("policy", ["letterbox", "resize"])
def test_items_are_uint8_images_and_int64_masks_at_img_size(train: bool, policy: str) -> None:
    dataset = SegmentationDataset(FakeSource([(50, 70), (20, 90), (33, 33)]), preprocess(resize=policy), train=train)
    assert len(dataset) == 3 and dataset.num_classes == 3
    for index in range(3):
        image, mask = dataset[index]
        assert image.dtype == torch.uint8 and image.shape == (3, 32, 48)
        assert mask.dtype == torch.int64 and mask.shape == (32, 48)
        assert set(mask.unique().tolist()) <= {0, 1, 2, 255}


def test_eval_items_are_deterministic_and_letterbox_pads_with_ignore() -> None:
    dataset = SegmentationDataset(FakeSource([(64, 32)]), preprocess(), train=False)
    first, second = dataset[0], dataset[0]
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert (first[1][:, :8] == 255).all() and (first[1][:, -8:] == 255).all()  # 16 px wide padding, centred


def test_cache_means_one_load_per_sample_across_epochs() -> None:
    source = FakeSource([(40, 40)] * 4)
    dataset = SegmentationDataset(source, preprocess(), train=True)
    assert dataset.cached
    for _ in range(3):
        for index in range(len(dataset)):
            dataset[index]
    assert source.loads == 4


def test_no_cache_loads_every_time() -> None:
    source = FakeSource([(40, 40)] * 2)
    dataset = SegmentationDataset(source, preprocess(), train=False, cache=False)
    for _ in range(2):
        dataset[0], dataset[1]
    assert source.loads == 4


def test_auto_cache_respects_the_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_module, "CACHE_LIMIT_BYTES", 3 * 32 * 48 * 4 - 1)
    assert not SegmentationDataset(FakeSource([(10, 10)] * 3), preprocess(), train=False).cached
    assert SegmentationDataset(FakeSource([(10, 10)] * 2), preprocess(), train=False).cached
    # crop caches full-size samples: the estimate uses the first sample's size
    source = FakeSource([(100, 100)] * 2)
    assert not SegmentationDataset(source, preprocess(resize="crop"), train=True).cached
    assert source.loads == 1


def test_the_caches_take_a_share_of_the_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine with little free memory the caches shrink with it (a laptop must not swap); plenty of it
    leaves the fixed limit."""
    import segkit.device

    monkeypatch.setattr(segkit.device, "available_memory", lambda device: 4 * (3 * 32 * 48 * 4 - 1))
    assert dataset_module.cache_limit() == 3 * 32 * 48 * 4 - 1
    assert not SegmentationDataset(FakeSource([(10, 10)] * 3), preprocess(), train=False).cached
    assert SegmentationDataset(FakeSource([(10, 10)] * 2), preprocess(), train=False).cached
    assert DecodedSource(FakeSource([(10, 10)])).limit_bytes == 3 * 32 * 48 * 4 - 1
    monkeypatch.setattr(segkit.device, "available_memory", lambda device: 2**40)
    assert dataset_module.cache_limit() == dataset_module.CACHE_LIMIT_BYTES
    monkeypatch.setattr(segkit.device, "available_memory", lambda device: None)
    assert dataset_module.cache_limit() == dataset_module.CACHE_LIMIT_BYTES


def test_augmentation_never_changes_the_cache() -> None:
    dataset = SegmentationDataset(FakeSource([(32, 48)] * 2), preprocess(), train=True)
    before = [tuple(array.copy() for array in dataset.sample(index)) for index in range(2)]
    for _ in range(10):
        dataset[0], dataset[1]
    for index in range(2):
        for kept, now in zip(before[index], dataset.sample(index)):
            np.testing.assert_array_equal(kept, now)


def test_preload_fills_the_cache_with_threads() -> None:
    source = FakeSource([(30, 30)] * 6)
    dataset = SegmentationDataset(source, preprocess(), train=False)
    dataset.preload(num_workers=3)
    assert source.loads == 6
    for index in range(6):
        dataset[index]
    assert source.loads == 6


def test_dataloader_workers_get_different_augmentation_streams() -> None:
    source = FakeSource([(32, 48)] * 16)
    source.load = lambda index, load=source.load: load(0)  # 16 copies of one sample
    config = preprocess(augment=AugmentConfig.from_dict({"level": "none", "hflip": True}))
    dataset = SegmentationDataset(source, config, train=True)
    dataset.preload()
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0))
    original = torch.from_numpy(dataset.sample(0)[0].transpose(2, 0, 1).copy())
    images = [image[0] for image, _ in loader]
    assert all(torch.equal(image, original) or torch.equal(image, original.flip(-1)) for image in images)
    mirrored = [not torch.equal(image, original) for image in images]
    # worker 0 serves even items, worker 1 odd items: identical streams would repeat in pairs
    assert mirrored[0::2] != mirrored[1::2]
    assert 0 < sum(mirrored) < 16


def test_crop_policy_trains_on_crops_and_validates_on_whole_images() -> None:
    source = FakeSource([(40, 70), (90, 30)])
    train = SegmentationDataset(source, preprocess(resize="crop"), train=True)
    assert all(train[index][0].shape == (3, 32, 48) for index in range(2))
    val = SegmentationDataset(source, preprocess(resize="crop"), train=False)
    assert val[0][0].shape == (3, 40, 70) and val[1][1].shape == (90, 30)


def test_bad_masks_raise_errors_naming_the_sample() -> None:
    source = FakeSource([(20, 20)], classes=("bg",))  # class 1 is out of range
    with pytest.raises(SegkitError, match=r"sample0: mask holds values \[1\] outside the classes 0..0"):
        SegmentationDataset(source, preprocess(), train=False)[0]
    source = FakeSource([(20, 20)])
    source.load = lambda index: FakeSample(np.zeros((20, 20, 3), np.uint8), np.zeros((21, 20), np.uint8), "odd")
    with pytest.raises(SegkitError, match="odd: mask .* is not a uint8 mask of size"):
        SegmentationDataset(source, preprocess(), train=False)[0]


def test_class_pixel_counts_from_resized_masks() -> None:
    source = FakeSource([(32, 48)] * 3)  # quarter squares: 16x24 = 384 pixels of class 1, 2, 1
    dataset = SegmentationDataset(source, preprocess(), train=True)
    counts = class_pixel_counts(dataset)
    assert counts.per_image.shape == (3, 3)
    np.testing.assert_array_equal(counts.pixels, [3 * (1536 - 384), 2 * 384, 384])
    np.testing.assert_array_equal(counts.images, [3, 2, 1])
    assert source.loads == 3
    counts = class_pixel_counts(SegmentationDataset(source, preprocess(), train=True, indices=[1]))
    np.testing.assert_array_equal(counts.pixels, [1536 - 384, 0, 384])
    np.testing.assert_array_equal(counts.images, [1, 0, 1])
    assert source.loads == 4  # a dataset of some indices decodes only those


def test_real_dataset_items(shared_datasets: Path) -> None:
    source = open_source(dataset_path(shared_datasets, "dubai_aerial"))
    source.samples = source.samples[:2]  # images of different sizes, RGB, ignore value 255
    for policy in ("letterbox", "crop"):
        dataset = SegmentationDataset(source, preprocess(resize=policy), train=True)
        image, mask = dataset[1]
        assert image.shape == (3, 32, 48) and mask.shape == (32, 48)
        assert set(mask.unique().tolist()) <= set(range(dataset.num_classes)) | {255}
