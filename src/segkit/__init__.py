"""segkit: semantic segmentation from annotated folders to deployable models.

The Python API mirrors the command line::

    import segkit
    result = segkit.train(data="data/", epochs=20, out="runs/exp")
    metrics = segkit.evaluate("runs/exp/best.pt", "data/val")
    model = segkit.load("runs/exp/best.pt")
    mask = model.predict("photo.jpg")        # numpy index mask at the photo's size
    probabilities = model.predict_proba("photo.jpg")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["evaluate", "load", "train", "__version__"]

if TYPE_CHECKING:
    from segkit.prediction.predictor import Predictor
    from segkit.training.trainer import TrainResult


def train(config: Any = None, **options: Any) -> TrainResult:
    """Train a model (options as ``segkit train``'s, e.g. ``data=``, ``epochs=``, ``out=``)."""
    from segkit.training.trainer import train as _train

    return _train(config, **options)


def evaluate(checkpoint: str, data: str, **options: Any) -> dict[str, Any]:
    """Metrics of a checkpoint on a dataset, at each image's original size."""
    from segkit.evaluation.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, data, **options)


def load(checkpoint: str, device: str = "auto") -> Predictor:
    """A :class:`~segkit.prediction.predictor.Predictor` from a checkpoint (``.predict``, ``.predict_proba``)."""
    from segkit.prediction.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, device=device)
