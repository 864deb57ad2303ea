"""segkit: semantic segmentation from annotated folders to deployable models.

The Python API mirrors the command line: one function per command, taking the command's
options as keyword arguments (``--tile 512x768`` is ``tile="512x768"``) and raising its
errors (:class:`~segkit.errors.SegkitError`, and :class:`~segkit.errors.OptionError` for
options that do not go together)::

    import segkit
    segkit.convert_labelme("annotations/", "data/")
    report = segkit.inspect("data/", sheet="sheet.png")
    plan = segkit.plan(data="data/", time_budget="10m")
    result = segkit.train(data="data/", time_budget="10m", out="runs/exp")
    metrics = segkit.evaluate("runs/exp/best.pt", "data/", report="report.html")
    masks = segkit.predict("runs/exp/best.pt", "photos/")  # {path: mask}; out="masks/" writes them
    segkit.export("runs/exp/best.pt", "model.onnx")
    segkit.serve("model.onnx", port=8080)                   # until Ctrl+C
    model = segkit.load("runs/exp/best.pt")                 # or model.onnx, without PyTorch
    mask = model.predict("photo.jpg")                       # numpy index mask at the photo's size

Importing segkit is light (no PyTorch): each function imports its part of the library
when it is first used. docs/python-api.md describes every function.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.version import __version__

# API name -> the library function that is it ("module:function"), imported on first use.
# Each command's run() calls the same function (src/segkit/cli/<command>.py).
_LIBRARY_FUNCTIONS: dict[str, str] = {
    "convert_labelme": "segkit.data.convert:convert_labelme",
    "convert_masks": "segkit.data.convert:convert_masks",
    "inspect": "segkit.data.inspect:inspect_dataset",
    "train": "segkit.training.trainer:train",
    "evaluate": "segkit.evaluation.evaluate:evaluate",
    "predict": "segkit.prediction.writer:predict",
    "export": "segkit.exporters.export:export",
    "serve": "segkit.serving.server:serve_model",
    "show": "segkit.data.masks:show_masks",
    "suggest": "segkit.labelling.suggest:suggest",
    "audit": "segkit.labelling.audit:audit",
    "report": "segkit.evaluation.run_report:report_run",
    "describe_models": "segkit.models.registry:describe_models",
    "weights": "segkit.models.weights:weights_report",
    "run_demo": "segkit.demo:run_demo",
}

__all__ = [
    "__version__",
    "audit",
    "convert_labelme",
    "convert_masks",
    "describe_models",
    "evaluate",
    "export",
    "inspect",
    "load",
    "plan",
    "predict",
    "report",
    "run_demo",
    "serve",
    "show",
    "suggest",
    "train",
    "weights",
]

if TYPE_CHECKING:
    from segkit.data.convert import convert_labelme as convert_labelme
    from segkit.data.convert import convert_masks as convert_masks
    from segkit.data.inspect import inspect_dataset as inspect
    from segkit.data.masks import show_masks as show
    from segkit.demo import run_demo as run_demo
    from segkit.evaluation.evaluate import evaluate as evaluate
    from segkit.evaluation.run_report import report_run as report
    from segkit.exporters.export import export as export
    from segkit.labelling.audit import audit as audit
    from segkit.labelling.suggest import suggest as suggest
    from segkit.models.registry import describe_models as describe_models
    from segkit.models.weights import weights_report as weights
    from segkit.planning.planner import Plan
    from segkit.prediction.predictor import Predictor
    from segkit.prediction.writer import predict as predict
    from segkit.serving.server import serve_model as serve
    from segkit.training.trainer import train as train


def __getattr__(name: str) -> Any:
    """``segkit.predict`` and the other command functions, imported when first asked for."""
    target = _LIBRARY_FUNCTIONS.get(name)
    if target is None:
        raise AttributeError(f"module 'segkit' has no attribute {name!r}")
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    globals()[name] = function
    return function


def __dir__() -> list[str]:
    return sorted({*globals(), *_LIBRARY_FUNCTIONS})


def load(model: str | Path, device: str = "auto", **options: Any) -> Predictor:
    """A trained model, ready to predict images in memory.

    Args:
        model: a ``.pt`` checkpoint, an exported ``.onnx`` model (run by ONNX Runtime, no
            PyTorch needed) or a folder written by ``segkit export --format hf``.
        device: ``auto`` (CUDA, MPS, CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        **options: how it predicts, as :func:`segkit.predict`'s: ``batch_size=8``,
            ``threshold=None``, ``tile="auto"``, ``overlap=0.25``, ``tta="none"``, ``crf=False``.

    Returns:
        A :class:`~segkit.prediction.predictor.Predictor`: ``.predict(image)`` gives an
        ``(H, W)`` uint8 index mask at the image's size, ``.predict_proba(image)`` the
        ``(C, H, W)`` probabilities, ``.predict_batch(images)`` many masks; images are paths,
        PIL images or uint8 arrays. ``.classes``, ``.palette`` and ``.card`` describe the model.

    Raises:
        OptionError: an option out of range.
        SegkitError: an unreadable model, or a ``.pt`` model without PyTorch installed.

    Example:
        >>> import segkit
        >>> model = segkit.load("runs/exp/best.pt", tta="flip")
        >>> mask = model.predict("photo.jpg")
        >>> model.classes[mask.max()]
    """
    from segkit.prediction.options import PredictionOptions
    from segkit.prediction.predictor import load_predictor

    return load_predictor(model, **PredictionOptions(device=device, **options).predictor_kwargs())


def plan(**options: Any) -> Plan:
    """The recipe :func:`segkit.train` would follow, with one reason per choice: ``segkit plan``.

    The training data is fingerprinted and this device measured for a few seconds.

    Args:
        **options: :func:`segkit.train`'s options (``data=``, ``time_budget=``, ``model=``,
            ``img_size=`` ... the fields of :class:`~segkit.config.TrainConfig`);
            the ones given are kept as they are, the planner derives the others.

    Returns:
        The :class:`~segkit.planning.planner.Plan`: ``.choices`` (option, value, reason),
        ``.epochs`` expected, ``.format()`` the command's printout, ``.to_dict()`` its JSON.

    Raises:
        SegkitError: no or unreadable training data, or an unknown or invalid option.

    Example:
        >>> import segkit
        >>> print(segkit.plan(data="data/", time_budget="10m").format())
    """
    from segkit.config import resolve_options
    from segkit.training.race import plan_training

    return plan_training(resolve_options(options))
