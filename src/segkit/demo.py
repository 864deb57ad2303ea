"""The built-in demo: synthetic labelme data -> convert -> train -> evaluate -> predict."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segkit.errors import SegkitError

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    out: Path
    checkpoint: Path
    test_metrics: dict[str, Any]
    predictions: Path
    seconds: float


def run_demo(
    out: str | Path = "demo_out", time_budget: float | str = 120.0, overwrite: bool = False, device: str = "auto"
) -> DemoResult:
    """Run segkit's whole job on data it generates itself: ``segkit demo``.

    Args:
        out: the output folder (labelme data, the converted dataset, the run, predictions).
        time_budget: training time: seconds, or a duration such as ``"2m"``.
        overwrite: replace an earlier demo output.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.

    Returns:
        A :class:`DemoResult`: ``out``, ``checkpoint``, ``test_metrics``, ``predictions``, ``seconds``.

    Raises:
        SegkitError: ``out`` exists and is not empty (without ``overwrite``), or a bad duration.

    Example:
        >>> import segkit
        >>> segkit.run_demo("demo_out", time_budget="2m").test_metrics["mIoU"]
    """
    from segkit.config import parse_duration

    time_budget = parse_duration(time_budget) if isinstance(time_budget, str) else float(time_budget)
    from segkit.data.convert import convert_labelme
    from segkit.data.synthetic import DemoSpec, generate_demo_dataset
    from segkit.evaluation.evaluate import evaluate_checkpoint
    from segkit.evaluation.report import format_table, write_json
    from segkit.prediction.predictor import Predictor
    from segkit.prediction.writer import predict_to_folder
    from segkit.training.trainer import train

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SegkitError(out, "exists and is not empty; use --overwrite to replace the demo output")
        shutil.rmtree(out)
    start = time.monotonic()
    logger.info("1/5 generating synthetic labelme data in %s", out / "labelme")
    generate_demo_dataset(out / "labelme" / "train", DemoSpec(num_images=64, seed=0))
    generate_demo_dataset(out / "labelme" / "test", DemoSpec(num_images=16, seed=1))
    logger.info("2/5 converting labelme JSON to index masks")
    convert_labelme(out / "labelme" / "train", out / "dataset" / "train")
    convert_labelme(out / "labelme" / "test", out / "dataset" / "test")
    logger.info("3/5 planning and training for up to %.0f s", time_budget)
    result = train(
        data=str(out / "dataset" / "train"), out=str(out / "run"), time_budget=time_budget, device=device, seed=0
    )
    logger.info("4/5 evaluating %s on 16 held-out images", result.best_checkpoint)
    metrics = evaluate_checkpoint(result.best_checkpoint, out / "dataset" / "test", device=device)
    write_json(metrics, out / "test_metrics.json")
    print(format_table(metrics))
    logger.info("5/5 predicting the held-out images at their original size")
    predictor = Predictor.from_checkpoint(result.best_checkpoint, device=device)
    predictions = out / "predictions"
    predict_to_folder(
        predictor, sorted((out / "dataset" / "test" / "images").iterdir()), predictions, color=True, overlay_images=True
    )
    return DemoResult(out, result.best_checkpoint, metrics, predictions, time.monotonic() - start)
