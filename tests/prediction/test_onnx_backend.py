"""The ONNX Runtime backend's guards: external data outside the model's folder, devices, malformed metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segkit.errors import SegkitError
from segkit.prediction.onnx_backend import METADATA_KEY, OnnxBackend
from segkit.prediction.predictor import Predictor

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402


def external(name: str, location: str) -> TensorProto:
    """A float tensor of 4 values stored in an external file at ``location``."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def model_reading(location: str, sparse: bool) -> onnx.ModelProto:
    """``y = x + w`` with ``w`` from external data: a dense initializer or a sparse constant."""
    add = helper.make_node("Add", ["x", "w"], ["y"])
    if sparse:
        indices = helper.make_tensor("w_indices", TensorProto.INT64, [4], [0, 1, 2, 3])
        constant = helper.make_sparse_tensor(external("w_values", location), indices, [4])
        nodes, initializers = [helper.make_node("Constant", [], ["w"], sparse_value=constant), add], []
    else:
        nodes, initializers = [add], [external("w", location)]
    vector = [4]
    graph = helper.make_graph(
        nodes,
        "reads-outside",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, vector)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, vector)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    metadata = {"format": "segkit-onnx", "version": 2, "card": {}}
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    return model


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("relative", [True, False])
def test_external_data_outside_the_models_folder_is_refused(tmp_path: Path, sparse: bool, relative: bool) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "model.onnx"
    path.write_bytes(model_reading("../secret.bin" if relative else str(secret), sparse).SerializeToString())
    with pytest.raises(SegkitError, match="not a readable ONNX model .*(escapes|not allowed)"):
        Predictor.from_checkpoint(path)


def test_bad_devices_and_metadata(tmp_path: Path) -> None:
    with pytest.raises(SegkitError, match="--device must be"):
        OnnxBackend(tmp_path / "model.onnx", "toaster")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])],
        "plain",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    for index, value in enumerate(
        ["{not json", json.dumps({"format": "other"}), json.dumps({"format": "segkit-onnx", "version": "x"})]
    ):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
        model.metadata_props.add(key=METADATA_KEY, value=value)
        path = tmp_path / f"m{index}.onnx"
        onnx.save(model, str(path))
        with pytest.raises(SegkitError, match=f"{path.name}: .*metadata"):
            OnnxBackend(path, "cpu")
