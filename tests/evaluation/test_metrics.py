"""compute_metrics against sklearn, torchmetrics and a hand-computed example; report output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassJaccardIndex,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

from segkit.evaluation.confusion import confusion_matrix
from segkit.evaluation.metrics import METRIC_KEYS, compute_metrics
from segkit.evaluation.report import format_table, write_json
from segkit.files import to_json_safe

IGNORE = 255


def masks_with_absent_classes(seed: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target), 10 % ignore; with >= 3 classes the last is absent from both,
    with >= 4 the one before it is only predicted, and class 0 is never predicted."""
    rng = np.random.default_rng(seed)
    shape = (2, 16, 16)
    used = num_classes - 1 if num_classes >= 3 else num_classes
    target = rng.integers(0, used - 1 if num_classes >= 4 else used, shape).astype(np.uint8)
    pred = rng.integers(1 if num_classes >= 3 else 0, used, shape).astype(np.uint8)
    target[rng.random(shape) < 0.1] = IGNORE
    return pred, target


def nan_mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if not np.isnan(values).all() else math.nan


@pytest.mark.parametrize("num_classes", range(2, 8))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_matches_sklearn(seed: int, num_classes: int) -> None:
    pred, target = masks_with_absent_classes(seed, num_classes)
    metrics = compute_metrics(confusion_matrix(pred, target, num_classes))
    valid = target != IGNORE
    y_true, y_pred = target[valid], pred[valid]
    options = {"labels": list(range(num_classes)), "average": None, "zero_division": np.nan}
    iou = jaccard_score(y_true, y_pred, labels=options["labels"], average=None, zero_division=0)
    absent = ~np.isin(np.arange(num_classes), np.concatenate([y_true, y_pred]))
    iou[absent] = np.nan  # jaccard_score has no zero_division=nan: 0 / 0 only for absent classes
    expected = {
        "iou": iou,
        "dice": f1_score(y_true, y_pred, **options),
        "precision": precision_score(y_true, y_pred, **options),
        "recall": recall_score(y_true, y_pred, **options),
    }
    for name, values in expected.items():
        ours = [metrics["per_class"][str(c)][name] for c in range(num_classes)]
        np.testing.assert_allclose(ours, values, rtol=1e-12, equal_nan=True, err_msg=name)
    assert metrics["mIoU"] == pytest.approx(nan_mean(expected["iou"]), nan_ok=True)
    assert metrics["mDice"] == pytest.approx(nan_mean(expected["dice"]), nan_ok=True)
    assert metrics["mean_precision"] == pytest.approx(nan_mean(expected["precision"]), nan_ok=True)
    assert metrics["mean_recall"] == pytest.approx(nan_mean(expected["recall"]), nan_ok=True)
    assert metrics["mean_class_accuracy"] == metrics["mean_recall"]
    assert metrics["num_pixels"] == int(valid.sum())
    assert [metrics["per_class"][str(c)]["support"] for c in range(num_classes)] == np.bincount(
        y_true, minlength=num_classes
    ).tolist()
    assert metrics["classes_absent"] == [str(c) for c in np.flatnonzero(absent)]
    assert metrics["classes_absent"] == ([str(num_classes - 1)] if num_classes >= 3 else [])


@pytest.mark.parametrize("num_classes", [2, 4, 6])
@pytest.mark.parametrize("seed", [3, 4])
def test_matches_torchmetrics(seed: int, num_classes: int) -> None:
    pred, target = masks_with_absent_classes(seed, num_classes)
    metrics = compute_metrics(confusion_matrix(pred, target, num_classes))
    preds, targets = torch.from_numpy(pred).long(), torch.from_numpy(target).long()
    common = {"num_classes": num_classes, "ignore_index": IGNORE}
    accuracy = MulticlassAccuracy(average="micro", **common)(preds, targets)
    assert metrics["pixel_accuracy"] == pytest.approx(float(accuracy))
    per_class = {
        "iou": MulticlassJaccardIndex(average=None, **common),
        "precision": MulticlassPrecision(average=None, **common),
        "recall": MulticlassRecall(average=None, **common),
        "specificity": MulticlassSpecificity(average=None, **common),
    }
    for name, metric in per_class.items():
        values = metric(preds, targets).double().numpy()
        ours = np.array([metrics["per_class"][str(c)][name] for c in range(num_classes)])
        defined = ~np.isnan(ours)  # torchmetrics reports 0 where the denominator is 0
        np.testing.assert_allclose(ours[defined], values[defined], rtol=1e-6, err_msg=name)
        assert (values[~defined] == 0).all()


def test_hand_computed_example() -> None:
    target = np.array([[0, 0, 1], [1, 1, 2], [2, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 2], [2, 0, 0]])
    cm = confusion_matrix(pred, target, 4)  # class 3 absent from both
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    metrics = compute_metrics(cm, ["bg", "road", "car", "boat"], num_images=1)
    assert set(metrics) == set(METRIC_KEYS)
    # class: TP, FP, FN, TN = bg 1,1,1,5; road 2,1,1,4; car 2,1,1,4 (8 labelled pixels)
    assert metrics["pixel_accuracy"] == pytest.approx(5 / 8)
    assert metrics["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert metrics["fwIoU"] == pytest.approx(2 / 8 * 1 / 3 + 3 / 8 * 1 / 2 + 3 / 8 * 1 / 2)
    assert metrics["mDice"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert metrics["per_class"]["bg"]["specificity"] == pytest.approx(5 / 6)
    assert metrics["per_class"]["road"]["specificity"] == pytest.approx(4 / 5)
    assert metrics["mean_specificity"] == pytest.approx((5 / 6 + 4 / 5 + 4 / 5) / 3)  # boat left out
    assert metrics["per_class"]["boat"]["specificity"] == 1.0  # TN / (TN + FP) = 8 / 8, yet not in the mean
    assert all(math.isnan(metrics["per_class"]["boat"][key]) for key in ("iou", "dice", "precision", "recall"))
    assert metrics["classes_absent"] == ["boat"]
    assert (metrics["num_images"], metrics["num_classes"], metrics["num_pixels"]) == (1, 4, 8)


def test_class_in_truth_never_predicted() -> None:
    metrics = compute_metrics(np.array([[5, 0], [3, 0]]))  # class 1 never predicted
    class_1 = metrics["per_class"]["1"]
    assert math.isnan(class_1["precision"])  # 0 / 0: left out of mean_precision
    assert (class_1["recall"], class_1["iou"], class_1["dice"]) == (0.0, 0.0, 0.0)
    assert metrics["mean_precision"] == pytest.approx(5 / 8)
    assert metrics["mIoU"] == pytest.approx((5 / 8 + 0) / 2)
    assert metrics["classes_absent"] == []


def test_empty_matrix_is_all_undefined() -> None:
    metrics = compute_metrics(torch.zeros(3, 3, dtype=torch.int64))
    assert math.isnan(metrics["pixel_accuracy"]) and math.isnan(metrics["mIoU"]) and math.isnan(metrics["fwIoU"])
    assert metrics["classes_absent"] == ["0", "1", "2"]
    assert metrics["num_images"] is None and metrics["num_pixels"] == 0


def test_bad_matrix_or_names_raise() -> None:
    with pytest.raises(ValueError, match="square"):
        compute_metrics(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="negative"):
        compute_metrics(np.array([[1, -1], [0, 1]]))
    with pytest.raises(ValueError, match="2 class names"):
        compute_metrics(np.eye(3, dtype=np.int64), ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        compute_metrics(np.eye(2, dtype=np.int64), ["a", "a"])


def test_json_and_table(tmp_path) -> None:
    metrics = compute_metrics(np.array([[4, 1, 0], [2, 3, 0], [0, 0, 0]]), ["bg", "cell", "spare"], num_images=2)
    safe = to_json_safe({**metrics, "extra": (np.float32(0.5), torch.tensor([1, 2]), float("inf"))})
    assert safe["per_class"]["spare"]["iou"] is None
    assert safe["extra"] == [0.5, [1, 2], None]
    path = tmp_path / "out" / "metrics.json"
    write_json(metrics, path)
    loaded = json.loads(path.read_text())
    assert set(loaded) == set(METRIC_KEYS)
    assert loaded["per_class"]["spare"]["dice"] is None
    assert loaded["confusion_matrix"] == [[4, 1, 0], [2, 3, 0], [0, 0, 0]]
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left
    table = format_table(metrics)
    assert "cell" in table and "0.7000" in table  # pixel accuracy 7 / 10
    assert "1 classes absent from truth and prediction, left out of the means: spare" in table
    assert "2 images, 10 labelled pixels, 3 classes" in table
