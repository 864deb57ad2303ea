"""``segkit export --quantize int8 --calibration DATA``: calibrated through prediction, scored, refused on a drop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_checkpoint
from evaluation.test_evaluate import CLASSES, colour_dataset
from prediction.test_predictor import squares

from segkit.checkpoint import save_checkpoint
from segkit.cli import main
from segkit.errors import SegkitError
from segkit.evaluation.evaluate import evaluate_checkpoint
from segkit.exporters import quantize as quantize_module
from segkit.exporters.onnx import export_onnx
from segkit.exporters.quantize import evenly_spaced, quantize_onnx
from segkit.prediction.onnx_backend import OnnxBackend
from segkit.prediction.predictor import Predictor

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

SIZES = [(40, 52), (33, 30), (64, 64), (50, 70), (45, 45)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A checkpoint, its fp32 export and a colour-mask dataset of the checkpoint's classes."""
    folder = tmp_path_factory.mktemp("quantize")
    save_checkpoint(tiny_checkpoint(CLASSES, zero_head_bias=True), folder / "best.pt")
    export_onnx(folder / "best.pt", folder / "fp32.onnx", exporter="torchscript")
    colour_dataset(folder / "data", SIZES)
    return folder / "best.pt", folder / "fp32.onnx", folder / "data"


def test_cli_quantizes_a_checkpoint_and_records_both_scores(
    setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint, fp32, data = setup
    out = tmp_path / "int8.onnx"
    argv = ["export", str(checkpoint), "--out", str(out), "--quantize", "int8", "--calibration", str(data)]
    assert main([*argv, "--masks", "masks_rgb", "--calibration-images", "3", "--exporter", "torchscript"]) == 0
    printed = capsys.readouterr().out
    int8 = OnnxBackend(out, "cpu")
    entry = int8.metadata["export"]["quantization"]
    assert entry["type"] == "int8" and entry["calibration_images"] == 3 and entry["evaluation_images"] == len(SIZES)
    assert int8.card == OnnxBackend(fp32, "cpu").card  # the same card travels
    scores = {
        name: evaluate_checkpoint(model, data, masks="masks_rgb")["mIoU"]
        for name, model in (("fp32", fp32), ("int8", out))
    }
    assert entry["fp32_mIoU"] == pytest.approx(scores["fp32"], abs=1e-6)
    assert entry["int8_mIoU"] == pytest.approx(scores["int8"], abs=1e-6)
    assert f"fp32 {scores['fp32']:.4f}, int8 {scores['int8']:.4f}" in printed
    assert abs(entry["mIoU_drop"]) <= 0.01
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(out)).graph.node)
    image = squares(57, 43)[0]
    agree = Predictor.from_checkpoint(out).predict(image) == Predictor.from_checkpoint(fp32).predict(image)
    assert agree.mean() > 0.95


def colour_model(path: Path) -> Path:
    """A segkit ONNX file whose 1x1 convolution finds the red and blue squares (mIoU near 1 on the test data)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from segkit.checkpoint import ModelCard
    from segkit.data.transforms import PreprocessConfig
    from segkit.prediction.onnx_backend import METADATA_KEY, ONNX_FORMAT, ONNX_FORMAT_VERSION

    weights = np.array([[0, 0, 0], [4, 0, -4], [-4, 0, 4]], np.float32).reshape(3, 3, 1, 1)
    bias = np.array([3, 0, 0], np.float32)
    dims = ["batch", 3, "height", "width"]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"])],
        "colours",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims)],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    card = ModelCard.create("unet", CLASSES, PreprocessConfig(img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3))
    metadata = {"format": ONNX_FORMAT, "version": ONNX_FORMAT_VERSION, "card": card.to_dict(), "export": {}}
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    onnx.save(model, str(path))
    return path


def test_a_real_drop_is_refused_unless_forced(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = setup[2]
    fp32 = colour_model(tmp_path / "colours.onnx")
    assert evaluate_checkpoint(fp32, data, masks="masks_rgb")["mIoU"] > 0.9
    assert quantize_onnx(fp32, tmp_path / "fine.onnx", data, masks="masks_rgb").drop <= 0.01  # calibrated properly
    reader = quantize_module.calibration_reader
    # Calibrating on blank inputs gives activation ranges of zero width: every real image is clipped.
    monkeypatch.setattr(
        quantize_module, "calibration_reader", lambda inputs, name: reader([x * 0 for x in inputs], name)
    )
    out = tmp_path / "int8.onnx"
    with pytest.raises(
        SegkitError, match=r"int8.onnx: int8 mIoU .* below fp32 .* \(more than --max-drop 0.01\); nothing written"
    ):
        quantize_onnx(fp32, out, data, masks="masks_rgb")
    assert not out.exists()
    result = quantize_onnx(fp32, out, data, masks="masks_rgb", force=True)
    assert result.drop > 0.01 and "kept because of --force" in caplog.text
    assert OnnxBackend(out, "cpu").metadata["export"]["quantization"]["mIoU_drop"] == pytest.approx(
        result.drop, abs=1e-6
    )
    with pytest.raises(SegkitError, match="already quantized"):
        quantize_onnx(out, tmp_path / "again.onnx", data, masks="masks_rgb")


def test_bad_requests(setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint, fp32, data = setup
    with pytest.raises(SystemExit):
        main(["export", str(checkpoint), "--out", str(tmp_path / "a.onnx"), "--quantize", "int8"])
    with pytest.raises(SystemExit):
        main(["export", str(checkpoint), "--out", str(tmp_path / "a.onnx"), "--masks", "masks_rgb"])
    assert main(["export", str(fp32), "--out", str(fp32), "--quantize", "int8", "--calibration", str(data)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                str(fp32),
                "--out",
                str(tmp_path / "b.onnx"),
                "--quantize",
                "int8",
                "--calibration",
                str(tmp_path / "none"),
            ]
        )
        == 2
    )
    assert list(tmp_path.iterdir()) == []
    assert evenly_spaced(3, 5) == [0, 1, 2] and evenly_spaced(10, 3) == [1, 5, 8]


def test_calibration_data_is_checked_before_the_fp32_export(
    setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint, _, _ = setup

    def no_export(*args, **kwargs):
        raise AssertionError("the fp32 export ran before the calibration data was read")

    monkeypatch.setattr("segkit.exporters.onnx.export_onnx", no_export)
    with pytest.raises(SegkitError, match="none"):
        quantize_onnx(checkpoint, tmp_path / "int8.onnx", tmp_path / "none")
    assert not (tmp_path / "int8.onnx").exists()


def test_one_collapsing_class_is_refused_though_the_mean_holds() -> None:
    from segkit.exporters.quantize import QuantizationResult, class_drops

    def metrics(ious: dict[str, float]) -> dict:
        return {"per_class": {name: {"iou": iou} for name, iou in ious.items()}}

    fp32 = metrics({"background": 0.90, "road": 0.80, "pole": 0.30, "sign": float("nan")})
    int8 = metrics({"background": 0.92, "road": 0.82, "pole": 0.26, "sign": float("nan")})
    drops = class_drops(fp32, int8)
    assert drops == pytest.approx({"background": -0.02, "road": -0.02, "pole": 0.04})
    result = QuantizationResult(Path("m.onnx"), 0.6667, 0.6667, 10, 10, 0.01, drops)
    assert result.drop <= result.max_drop
    assert result.refusal() == "int8 IoU of class 'pole' is 0.0400 below fp32's (more than --max-drop 0.01)"
    assert QuantizationResult(Path("m.onnx"), 0.6, 0.6, 10, 10, 0.05, drops).refusal() is None
