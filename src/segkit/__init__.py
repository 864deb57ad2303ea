"""segkit: semantic segmentation from annotated folders to deployable models.

The Python API mirrors the command line::

    import segkit
    result = segkit.train(data="data/", epochs=20, out="runs/exp")
    metrics = segkit.evaluate("runs/exp/best.pt", "data/val")
    model = segkit.load("runs/exp/best.pt")  # or an exported model.onnx, without PyTorch
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
    """Metrics of a checkpoint (``.pt`` or ``.onnx``) on a dataset, at each image's original size.

    Options are ``segkit evaluate``'s: data (``split``, ``val_split``, ``masks``, ``colors``,
    ``classes``, ``ignore_index``) and prediction (``device``, ``tta``, ``tiling``, ``crf``,
    ``threshold``, ``batch_size``); see :func:`segkit.evaluation.evaluate.evaluate_checkpoint`.
    """
    from segkit.evaluation.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, data, **options)


def load(checkpoint: str, device: str = "auto", **options: Any) -> Predictor:
    """A :class:`~segkit.prediction.predictor.Predictor` (``.predict``, ``.predict_proba``, ``.predict_batch``).

    ``checkpoint`` is a ``.pt`` checkpoint or an exported ``.onnx`` model (ONNX Runtime, no
    PyTorch needed); ``options`` are the predictor's (``tta``, ``tiling``, ``crf``,
    ``threshold``, ``batch_size``).
    """
    from segkit.prediction.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, device=device, **options)
