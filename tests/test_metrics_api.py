"""``segkit.metrics``: the documented public import path of the metrics API works as README shows."""

from __future__ import annotations

import numpy as np
import pytest

import segkit.metrics as metrics_api
from segkit.metrics import ConfusionMatrix, format_table, write_json


def test_public_metrics_api_as_documented(tmp_path) -> None:
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]], np.uint8)
    cm = ConfusionMatrix(num_classes=3, ignore_index=255, class_names=["bg", "cat", "dog"])
    cm.update(pred, truth)
    cm.all_reduce()  # no process group: a no-op
    result = cm.compute()
    # cat: TP 3, FP 1, FN 0 -> IoU 3/4; dog: TP 1, FN 1 -> 1/2; bg: TP 1, FP 1, FN 1 -> 1/3
    assert result["per_class"]["cat"]["iou"] == pytest.approx(0.75)
    assert result["per_class"]["dog"]["iou"] == pytest.approx(0.5)
    assert result["mIoU"] == pytest.approx((1 / 3 + 0.75 + 0.5) / 3)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)
    table = format_table(result)
    assert all(name in table for name in ("bg", "cat", "dog", "mIoU"))
    write_json(result, tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text().count("cat") >= 1
    assert set(metrics_api.__all__) <= set(dir(metrics_api))
