"""The training console report: epoch k of ~N, time left, worst classes, classes stuck at IoU 0."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from segkit.training.callbacks import ValidationSamples
from segkit.training.console import ZERO_IOU_GRACE, ConsoleReport, format_duration


def fake_trainer(budget: float | None, epochs: int | None = None) -> SimpleNamespace:
    config = SimpleNamespace(time_budget=budget, max_epochs=epochs or 10**6)
    return SimpleNamespace(
        config=config, max_epochs_estimate=12, elapsed=83.0, history=[{}] * 3, best_weights="ema", best_epoch=3
    )


def metrics(ious: dict[str, float]) -> dict:
    return {"per_class": {name: {"iou": iou} for name, iou in ious.items()}}


def test_epoch_line_says_where_the_run_is(caplog: pytest.LogCaptureFixture) -> None:
    report = ConsoleReport()
    row = {
        "train_loss": 0.4123,
        "val_mIoU": 0.61,
        "best": True,
        "val_iou_road": 0.9,
        "val_iou_pole": 0.0,
        "val_iou_sign": 0.12,
        "val_iou_sky": 0.95,
        "elapsed": 83.0,
        "images_per_second": 5.21,
    }
    with caplog.at_level(logging.INFO, logger="segkit.training"):
        report.on_epoch_end(fake_trainer(600.0), 3, row)
    line = caplog.records[-1].getMessage()
    assert line.startswith("epoch 3 of ~12 · loss 0.4123 · val mIoU 0.6100 (best)")
    assert (
        "worst: pole 0.00, sign 0.12, road 0.90" in line and "1:23 elapsed, ~8:37 left" in line and "5.2 img/s" in line
    )


def test_a_class_stuck_at_zero_is_named_once_after_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    report = ConsoleReport()
    trainer = fake_trainer(None, 50)
    with caplog.at_level(logging.WARNING, logger="segkit.training"):
        for epoch in range(1, ZERO_IOU_GRACE + 3):
            report.on_validation_end(trainer, epoch, metrics({"road": 0.8, "pole": 0.0}), ValidationSamples())
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [f"epoch {ZERO_IOU_GRACE}: IoU is still 0 for pole"]


def test_durations() -> None:
    assert format_duration(83) == "1:23" and format_duration(4000) == "1:06:40" and format_duration(-5) == "0:00"
