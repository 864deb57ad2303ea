"""The training Dataset: decoded, resized uint8 samples, cached in memory.

``SegmentationDataset`` wraps some samples (``indices``) of any data source (an object
with ``__len__``, ``classes`` and ``load(i)`` returning something with ``.image``
``(H,W,3)`` uint8 RGB, ``.mask`` ``(H,W)`` uint8 and ``.name``). Each sample is
decoded and resized once (:func:`segkit.data.transforms.resize_sample`); when the
samples fit in memory they are kept, so later epochs only augment. With the ``crop``
policy, training items are crops drawn by :class:`segkit.data.sampling.CropSampler`
(a share of them centred on rare classes). Items are uint8 images and int64 masks;
normalisation happens on the device (:func:`segkit.data.transforms.normalize`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from tqdm import tqdm

from segkit.data.sampling import CropSampler, class_locations, rarity_weights
from segkit.data.transforms import PreprocessConfig, build_train_transform, resize_sample, seed_transform
from segkit.errors import SegkitError

# A sample cache (decoded originals, or resized samples: 3 image bytes + 1 mask byte per pixel) holds at most this ...
CACHE_LIMIT_BYTES = 4 * 2**30
# ... and at most this share of the memory free when it is sized: a run keeps two (originals and resized samples),
# and 4 GiB each would push an 8 GB laptop into swap (photos of up to 5632 px: 7.8 GB at the peak)
CACHE_MEMORY_SHARE = 0.25


class SampleSource(Protocol):
    """What the dataset needs from a data source (``segkit.data.sources.DataSource`` fits)."""

    classes: Sequence[str]
    samples: Sequence[Any]  # each with a ``name``

    def __len__(self) -> int: ...

    def load(self, index: int) -> Any: ...


def cache_limit() -> int:
    """Bytes one sample cache may hold: :data:`CACHE_LIMIT_BYTES`, or :data:`CACHE_MEMORY_SHARE` of the memory free now
    (the container's limit counted) when that is less."""
    from segkit.device import available_memory

    free = available_memory(torch.device("cpu"))
    return CACHE_LIMIT_BYTES if free is None else int(min(CACHE_LIMIT_BYTES, CACHE_MEMORY_SHARE * free))


def decode_in_threads(
    decode: Callable[[int], Any], indices: Sequence[int], threads: int, progress: bool | None, description: str
) -> None:
    """Run ``decode`` on every index in a thread pool (decoders release the GIL), with a progress bar.

    The bar shows only on a terminal when ``progress`` is ``None``, and never without work.
    """
    disable = True if not indices else (None if progress is None else not progress)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(
            tqdm(
                pool.map(decode, indices),
                total=len(indices),
                desc=description,
                unit="image",
                leave=False,
                disable=disable,
            )
        )


class DecodedSource:
    """A data source whose samples are decoded once and kept at their original size while they fit.

    Planning (the dataset fingerprint), the training dataset and validation at original
    size all read samples through one of these, so no image is decoded twice.

    Args:
        source: the samples (see :class:`SampleSource`).
        limit_bytes: memory for kept samples (image and mask bytes; default :func:`cache_limit`); past it samples
            are decoded on demand.
    """

    def __init__(self, source: SampleSource, limit_bytes: int | None = None) -> None:
        self.source = source
        self.classes = list(source.classes)
        self.limit_bytes = cache_limit() if limit_bytes is None else limit_bytes
        self._kept: dict[int, Any] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.source)

    @property
    def samples(self) -> Sequence[Any]:
        """The underlying source's sample references (names and files), nothing decoded."""
        return self.source.samples

    def name(self, index: int) -> str:
        """Sample ``index``'s name without decoding it."""
        return self.source.samples[index].name

    def load(self, index: int) -> Any:
        """Sample ``index`` (``.image``, ``.mask``, ``.name``), decoded on first use."""
        sample = self._kept.get(index)
        if sample is None:
            sample = self.source.load(index)
            size = np.asarray(sample.image).nbytes + np.asarray(sample.mask).nbytes
            if self._bytes + size <= self.limit_bytes:
                self._kept[index] = sample
                self._bytes += size
        return sample

    def preload(self, indices: Sequence[int], threads: int = 2, progress: bool | None = None) -> None:
        """Decode ``indices`` now (in threads, with a progress bar), so bad files are found before training."""
        decode_in_threads(self.load, indices, threads, progress, "decoding validation images")

    def release(self, indices: Sequence[int]) -> None:
        """Forget decoded samples no longer needed at their original size."""
        for index in indices:
            sample = self._kept.pop(index, None)
            if sample is not None:
                self._bytes -= np.asarray(sample.image).nbytes + np.asarray(sample.mask).nbytes


class SegmentationDataset(Dataset):
    """A torch Dataset of ``(image uint8 (3,H,W), mask int64 (H,W))`` pairs.

    Args:
        source: the samples (see :class:`SampleSource`).
        preprocess: resize policy, network input size, ignore value and augmentation.
        train: apply random augmentation (and the random crop of the ``crop`` policy).
        cache: keep decoded, resized samples in memory; ``None`` decides from the
            estimated size (``n x h x w x 4`` bytes within :func:`cache_limit`).
        indices: the source's samples this dataset holds (default all); item ``i`` is
            sample ``indices[i]``, and only these are ever decoded.
        oversample: ``crop`` training: share of crops centred on a pixel of a class
            chosen by rarity (:class:`~segkit.data.sampling.CropSampler`).

    Random augmentation follows torch's seed: in the main process ``torch.manual_seed``
    makes it reproducible, and every DataLoader worker gets its own stream.
    """

    def __init__(
        self,
        source: SampleSource,
        preprocess: PreprocessConfig,
        train: bool,
        cache: bool | None = None,
        indices: Sequence[int] | None = None,
        oversample: float = 0.0,
    ) -> None:
        self.source = source
        self.preprocess = preprocess
        self.train = train
        self.indices = list(range(len(source))) if indices is None else list(indices)
        self.classes = list(source.classes)
        self.num_classes = len(self.classes)
        self.ignore_index = preprocess.ignore_index
        self.transform = build_train_transform(preprocess) if train else None
        self.crops = train and preprocess.resize == "crop"
        self.oversample = oversample if self.crops else 0.0
        self.sampler: CropSampler | None = None
        self._transform_seed: int | None = None
        self._rng = np.random.default_rng(0)
        self._cache: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(self.indices)
        self._locations: list[dict[int, np.ndarray] | None] = [None] * len(self.indices)
        self.cached = self._decide_cache(cache)

    def __len__(self) -> int:
        return len(self._cache)

    def _decide_cache(self, cache: bool | None) -> bool:
        if cache is not None:
            return cache
        if not len(self):
            return True
        if self.preprocess.resize != "crop":
            height, width = self.preprocess.img_size
            return len(self) * height * width * 4 <= cache_limit()
        first = self._load(0)  # full-size samples: estimate from the first one
        height, width = first[1].shape
        fits = len(self) * height * width * 4 <= cache_limit()
        if fits:
            self._store(0, first)
        return fits

    def _load(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode item ``item``, check it, and apply the deterministic resize step."""
        sample = self.source.load(self.indices[item])
        image, mask = np.asarray(sample.image), np.asarray(sample.mask)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise SegkitError(sample.name, f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if mask.dtype != np.uint8 or mask.shape != image.shape[:2]:
            raise SegkitError(
                sample.name, f"mask {mask.shape} {mask.dtype} is not a uint8 mask of size {image.shape[:2]}"
            )
        self._check_mask_values(sample.name, mask)
        return resize_sample(image, mask, self.preprocess)

    def _check_mask_values(self, name: str, mask: np.ndarray) -> None:
        """Refuse out-of-range labels here: in a CUDA loss they become an opaque device assert."""
        values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
        bad = values[(values != self.ignore_index) & (values >= self.num_classes)]
        if bad.size:
            raise SegkitError(
                name,
                f"mask holds values {bad[:10].tolist()} outside the classes 0..{self.num_classes - 1} "
                f"and the ignore value {self.ignore_index}",
            )

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The resized, not augmented ``(image (H,W,3), mask (H,W))`` uint8 arrays of item ``index`` (read-only when cached)."""
        item = self._cache[index]
        if item is None:
            item = self._load(index)
            # DataLoader workers each hold a private copy of the dataset: caching there would
            # keep one full cache per worker. Workers use what preload() cached before forking.
            if self.cached and get_worker_info() is None:
                self._store(index, item)
        return item

    def _store(self, index: int, item: tuple[np.ndarray, np.ndarray]) -> None:
        for array in item:
            array.flags.writeable = False  # augmentation must never change the cache
        self._cache[index] = item
        if self.oversample > 0:
            self._locations[index] = class_locations(item[1], self.num_classes, np.random.default_rng(index))

    def preload(self, num_workers: int = 4, progress: bool | None = None) -> None:
        """Fill the cache now with a thread pool (decoders release the GIL), with a progress bar.

        Call it before iterating a DataLoader with workers: forked workers share the
        filled cache; without it they decode every sample every epoch.
        """
        if not self.cached:
            return
        missing = [index for index, item in enumerate(self._cache) if item is None]
        decode_in_threads(self.sample, missing, num_workers, progress, "decoding images")

    def use_class_shares(self, pixel_share: Sequence[float]) -> None:
        """Let forced crops seek classes by rarity (``1/sqrt(share)``, :func:`~segkit.data.sampling.rarity_weights`)."""
        if self.crops:
            self.sampler = CropSampler(
                self.preprocess.img_size,
                self.oversample,
                rarity_weights(pixel_share),
                self.preprocess.pad_value,
                self.ignore_index,
            )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.sample(index)
        if self.transform is not None:
            self._seed_for_process()
            if self.crops:
                sampler = self.sampler or CropSampler(
                    self.preprocess.img_size,
                    0.0,
                    np.zeros(self.num_classes),
                    self.preprocess.pad_value,
                    self.ignore_index,
                )
                locations = self._locations[index]
                if locations is None and self.oversample > 0:
                    locations = class_locations(mask, self.num_classes, self._rng)
                image, mask = sampler(image, mask, locations, self._rng)
            augmented = self.transform(image=image, mask=mask)
            image, mask = augmented["image"], augmented["mask"]
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image_t, torch.from_numpy(mask.astype(np.int64))

    def _seed_for_process(self) -> None:
        """Reseed augmentation whenever torch's seed changes (a new worker, a new epoch's workers).

        Albumentations and the crop sampler keep their own generators; without this, forked
        DataLoader workers would all copy the same state and augment identically.
        """
        seed = torch.initial_seed()
        if seed != self._transform_seed:
            seed_transform(self.transform, seed % 2**32)
            self._rng = np.random.default_rng(seed % 2**32)
            self._transform_seed = seed


@dataclass(frozen=True)
class ClassCounts:
    """Per-class pixel counts of a dataset's resized masks (ignored pixels left out).

    Attributes:
        per_image: ``(N, C)`` int64 labelled pixels of each class in each image.
    """

    per_image: np.ndarray

    @property
    def pixels(self) -> np.ndarray:
        """``(C,)`` labelled pixels per class."""
        return self.per_image.sum(axis=0)

    @property
    def images(self) -> np.ndarray:
        """``(C,)`` number of images containing each class."""
        return (self.per_image > 0).sum(axis=0)


def class_pixel_counts(dataset: SegmentationDataset) -> ClassCounts:
    """Count pixels per class and item of a dataset's resized masks (for class weights and crop sampling)."""
    size = dataset.num_classes
    rows = [np.bincount(dataset.sample(index)[1].ravel(), minlength=256)[:size] for index in range(len(dataset))]
    return ClassCounts(np.stack(rows).astype(np.int64) if rows else np.zeros((0, size), np.int64))
