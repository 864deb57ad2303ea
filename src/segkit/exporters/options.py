"""The export formats' choices and defaults, read by the exporters and by ``segkit export``'s options (imports nothing)."""

FORMATS = ("onnx", "hf")
EXPORTERS = ("auto", "dynamo", "torchscript")
QUANTIZE_CHOICES = ("int8",)
DEFAULT_OPSET = 18
MIN_OPSET = 7
DEFAULT_CALIBRATION_IMAGES = 64
DEFAULT_MAX_DROP = 0.01
