"""torch.hub entry points: every segkit model by its registry name, and ``checkpoint`` for trained ones.

    import torch
    model = torch.hub.load("path/to/segkit", "unet", source="local", num_classes=3)
    model = torch.hub.load("path/to/segkit", "unet-resnet34", source="local", num_classes=2, pretrained=True)
    trained = torch.hub.load("path/to/segkit", "checkpoint", "runs/exp/best.pt", source="local")
    trained.card.classes, trained.predictor.predict("photo.jpg")

Model entries take the keyword arguments of ``segkit.models.create_model`` (``num_classes``,
``in_channels`` and the model's options, see ``segkit models``); ``torch.hub.list`` shows
them all. Names are imported privately so that only entries are listed.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision", "numpy", "PIL", "albumentations", "cv2", "segmentation_models_pytorch", "timm"]

_SOURCE = _Path(__file__).resolve().parent / "src"
if _SOURCE.is_dir() and str(_SOURCE) not in _sys.path:  # a checkout: use its segkit
    _sys.path.insert(0, str(_SOURCE))

import segkit.models as _models  # noqa: E402


def _entry(name: str):
    info = _models.model_info(name)

    def build(num_classes: int = 2, in_channels: int = 3, **options):
        return _models.create_model(name, num_classes, in_channels, **options)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"{name} ({info.family}): {info.paper}.\n\n"
        "Keyword arguments as segkit.models.create_model: num_classes (1 = binary), in_channels, and the "
        f"model's options{' (pretrained=True: ImageNet encoder weights)' if info.pretrained_encoder else ''}."
    )
    return build


for _name in _models.list_models():
    globals()[_name] = _entry(_name)


def checkpoint(path: str, device: str = "cpu"):
    """A trained segkit model: for a ``.pt`` checkpoint or exported folder the ``torch.nn.Module`` in eval
    mode; for an ``.onnx`` file the ONNX Runtime session (call ``predictor.predict`` for either).

    The returned module has ``card`` (the :class:`segkit.checkpoint.ModelCard`: classes,
    colours, preprocessing ...) and ``predictor`` (a :class:`segkit.prediction.predictor.Predictor`
    whose ``predict(image)`` gives masks at the image's original size).
    """
    from segkit.prediction.predictor import Predictor

    predictor = Predictor.from_checkpoint(path, device=device)
    model = predictor.model
    model.card = predictor.card
    model.predictor = predictor
    return model
