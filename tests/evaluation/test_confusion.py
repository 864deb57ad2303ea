"""confusion_matrix and the ConfusionMatrix accumulator against sklearn and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from segkit.evaluation.confusion import ConfusionMatrix, compute_iou, confusion_matrix

IGNORE = 255


def random_masks(seed: int, num_classes: int, shape=(3, 17, 19)) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and truth with ~10 % ignore pixels; the last class is absent from both,
    the one before it (with >= 4 classes) appears only in the prediction."""
    rng = np.random.default_rng(seed)
    present = num_classes - 1 if num_classes >= 3 else num_classes
    truth_classes = present - 1 if num_classes >= 4 else present
    target = rng.integers(0, truth_classes, shape).astype(np.uint8)
    pred = rng.integers(0, present, shape).astype(np.uint8)
    ignored = rng.random(shape) < 0.1
    target[ignored] = IGNORE
    pred[ignored & (rng.random(shape) < 0.5)] = 200  # predictions at ignored pixels don't matter
    return pred, target


@pytest.mark.parametrize("num_classes", range(2, 8))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn(seed: int, num_classes: int) -> None:
    pred, target = random_masks(seed, num_classes)
    valid = target != IGNORE
    expected = sk_confusion_matrix(target[valid], pred[valid], labels=range(num_classes))
    result = confusion_matrix(pred, target, num_classes)  # uint8: the joint-histogram path
    assert isinstance(result, np.ndarray) and result.dtype == np.int64
    np.testing.assert_array_equal(result, expected)
    as_int64 = confusion_matrix(pred.astype(np.int64), target.astype(np.int32), num_classes)  # the general path
    np.testing.assert_array_equal(as_int64, expected)
    as_tensors = confusion_matrix(torch.from_numpy(pred).long(), torch.from_numpy(target).int(), num_classes)
    assert as_tensors.dtype == torch.int64
    np.testing.assert_array_equal(as_tensors.numpy(), expected)


def test_rows_are_truth_columns_prediction() -> None:
    target = np.array([[0, 0], [1, 255]])
    pred = np.array([[0, 1], [1, 0]])
    assert confusion_matrix(pred, target, 2).tolist() == [[1, 1], [0, 1]]
    assert confusion_matrix(pred, target, 256, ignore_index=None)[255, 0] == 1


def test_bool_masks_and_any_shape() -> None:
    target = np.array([True, False, True, True])
    pred = np.array([True, True, False, True])
    assert confusion_matrix(pred, target, 2).tolist() == [[0, 1], [1, 2]]


@pytest.mark.parametrize("kind", ["uint8", "int64", "tensor"])
def test_out_of_range_values_raise(kind: str) -> None:
    def masks(*values: list[int]) -> list:
        arrays = [np.array(v, np.int64 if min(v) < 0 else kind if kind != "tensor" else np.int64) for v in values]
        return [torch.from_numpy(a) for a in arrays] if kind == "tensor" else arrays

    assert confusion_matrix(*masks([0, 1, 9], [0, 1, 255]), 2).sum() == 2  # 9 sits on an ignored pixel
    with pytest.raises(ValueError, match=r"pred holds values \[2\]"):
        confusion_matrix(*masks([0, 2, 0], [0, 1, 255]), 2)
    with pytest.raises(ValueError, match=r"pred holds values \[-1\]"):
        confusion_matrix(*masks([-1, 0, 0], [0, 1, 255]), 2)
    with pytest.raises(ValueError, match=r"target holds values \[3, 7\]"):
        confusion_matrix(*masks([0, 0, 0, 0], [0, 3, 255, 7]), 2)
    ignored_inside = confusion_matrix(*masks([0, 1, 1], [0, 1, 2]), 3, ignore_index=1)  # an ignore value below C
    assert np.asarray(ignored_inside).tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), 2)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(np.zeros(4, np.float32), np.zeros(4, np.uint8), 2)
    with pytest.raises(TypeError, match="numpy"):
        confusion_matrix([0, 1], np.zeros(2, np.uint8), 2)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(np.zeros(2, np.uint8), np.zeros(2, np.uint8), 0)


def test_accumulating_batches_equals_one_matrix() -> None:
    pred, target = random_masks(5, 6, shape=(10, 12, 9))
    accumulator = ConfusionMatrix(6)
    for start in range(0, 10, 3):  # batches of 3, 3, 3, 1
        accumulator.update(torch.from_numpy(pred[start : start + 3]), torch.from_numpy(target[start : start + 3]))
    np.testing.assert_array_equal(accumulator.matrix, confusion_matrix(pred, target, 6))
    assert accumulator.num_images == 10
    accumulator.update(pred[0], target[0])  # one (H, W) image counts as 1
    accumulator.update(pred[:2].reshape(-1), target[:2].reshape(-1), num_images=2)
    assert accumulator.num_images == 13
    metrics = accumulator.compute()
    assert metrics["num_images"] == 13
    assert metrics["confusion_matrix"] == accumulator.matrix.tolist()
    accumulator.reset()
    assert accumulator.num_images == 0 and int(accumulator.matrix.sum()) == 0


def test_class_names_and_compute_iou() -> None:
    pred, target = random_masks(3, 4)
    accumulator = ConfusionMatrix(4, class_names=["bg", "a", "b", "c"])
    accumulator.update(pred, target)
    metrics = accumulator.compute()
    assert list(metrics["per_class"]) == ["bg", "a", "b", "c"]
    assert metrics["classes_absent"] == ["c"]
    iou = compute_iou(pred, target, 4)
    assert np.isnan(iou[3])
    assert iou[:3].tolist() == pytest.approx([metrics["per_class"][name]["iou"] for name in ("bg", "a", "b")])
    with pytest.raises(ValueError, match="class names"):
        ConfusionMatrix(3, class_names=["a", "b"])


def test_all_reduce_without_distributed_is_a_no_op() -> None:
    accumulator = ConfusionMatrix(3)
    accumulator.update(np.array([0, 1, 2]), np.array([0, 1, 1]))
    before = accumulator.matrix.copy()
    accumulator.all_reduce()
    np.testing.assert_array_equal(accumulator.matrix, before)
    assert accumulator.num_images == 1


def _reduce_worker(rank: int, world_size: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=world_size)
    try:
        pred, target = random_masks(rank, 5)
        accumulator = ConfusionMatrix(5)
        accumulator.update(pred, target)
        accumulator.all_reduce()
        torch.save((torch.from_numpy(accumulator.matrix), accumulator.num_images), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_over_ranks(tmp_path) -> None:
    # fork: the workers need no re-import of torch and sklearn, which would take seconds
    mp.start_processes(_reduce_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    expected = sum(confusion_matrix(*random_masks(rank, 5), 5) for rank in range(2))
    for rank in range(2):
        matrix, num_images = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        np.testing.assert_array_equal(matrix.numpy(), expected)
        assert num_images == 6  # each rank saw a batch of 3 images


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu() -> None:
    pred, target = random_masks(7, 6)
    expected = confusion_matrix(pred, target, 6)
    on_gpu = confusion_matrix(torch.from_numpy(pred).cuda(), torch.from_numpy(target), 6)
    assert on_gpu.is_cuda and (on_gpu.cpu().numpy() == expected).all()
    accumulator = ConfusionMatrix(6, device="cuda")
    accumulator.update(torch.from_numpy(pred).cuda(), torch.from_numpy(target).cuda())
    accumulator.update(pred, target)  # numpy batches join a matrix on the GPU
    assert accumulator.matrix.is_cuda and (accumulator.matrix.cpu().numpy() == 2 * expected).all()
    on_host = ConfusionMatrix(6)
    on_host.update(torch.from_numpy(pred).cuda(), torch.from_numpy(target).cuda())  # counted on the GPU
    np.testing.assert_array_equal(on_host.matrix, expected)
