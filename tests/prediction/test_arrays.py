"""The numpy and PyTorch array operations agree, so both backends share one prediction pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segkit.prediction.arrays import NumpyOps, array_ops, probabilities_to_mask, scores_from_logits
from segkit.prediction.torch_ops import TorchOps


def pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    array = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return array, torch.from_numpy(array.copy())


def test_array_ops_follows_the_array_type() -> None:
    assert array_ops(np.zeros(2)) is NumpyOps and array_ops(torch.zeros(2)) is TorchOps


@pytest.mark.parametrize("channels", [1, 3, 6, 200])  # 200: more than OpenCV resizes at once
@pytest.mark.parametrize("size", [(80, 101), (20, 31), (36, 53), (37, 53)])
@pytest.mark.parametrize("antialias", [False, True])
def test_resize_is_the_same_bilinear(channels: int, size: tuple[int, int], antialias: bool) -> None:
    array, tensor = pair((2, channels, 37, 53))
    ours = NumpyOps.resize(array, size, antialias=antialias)
    theirs = TorchOps.resize(tensor, size, antialias=antialias).numpy()
    assert ours.shape == theirs.shape == (2, channels, *size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=5e-5)


def test_the_other_operations_agree() -> None:
    array, tensor = pair((2, 5, 9, 11))
    for ours, theirs in (
        (NumpyOps.flip(array, (3,)), TorchOps.flip(tensor, (3,))),
        (NumpyOps.flip(array, (3, 2)), TorchOps.flip(tensor, (3, 2))),
        (NumpyOps.softmax(array, 1), TorchOps.softmax(tensor, 1)),
        (NumpyOps.sigmoid(array * 100), TorchOps.sigmoid(tensor * 100)),  # no overflow
        (NumpyOps.concat([array, array], 1), TorchOps.concat([tensor, tensor], 1)),
        (NumpyOps.argmax(array, 1), TorchOps.argmax(tensor, 1)),
        (NumpyOps.argmax(array, -3), TorchOps.argmax(tensor, -3)),
    ):
        np.testing.assert_allclose(NumpyOps.to_numpy(ours), TorchOps.to_numpy(theirs), atol=1e-6)
    assert NumpyOps.argmax(array, 1).dtype == np.uint8 and TorchOps.argmax(tensor, 1).dtype == torch.uint8
    ties = np.zeros((3, 2, 2), np.float32)
    ties[1:] = 1.0  # classes 1 and 2 tie: the first wins, as np.argmax
    assert (NumpyOps.argmax(ties, 0) == 1).all()


@pytest.mark.parametrize("binary", [False, True])
def test_one_logits_to_mask_step(binary: bool) -> None:
    array, tensor = pair((2, 1 if binary else 4, 6, 7), seed=3)
    scores = scores_from_logits(array, binary)
    assert scores.shape == (2, 2 if binary else 4, 6, 7)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-6)
    for threshold in (0.3, 0.5):
        mask = probabilities_to_mask(scores, binary, threshold)
        expected = (scores[:, 1] > threshold) if binary else scores.argmax(1)
        np.testing.assert_array_equal(mask, expected.astype(np.uint8))
        on_tensors = probabilities_to_mask(scores_from_logits(tensor, binary), binary, threshold)
        np.testing.assert_array_equal(on_tensors.numpy(), mask)
        np.testing.assert_array_equal(probabilities_to_mask(scores[0], binary, threshold), mask[0])  # (C, H, W)
