"""ONNX export: a checked graph with dynamic batch/height/width, metadata, and ONNX Runtime prediction."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint
from PIL import Image
from prediction.test_predictor import CLASSES, squares

import segkit
from segkit.checkpoint import ModelCard, save_checkpoint
from segkit.cli import main
from segkit.errors import SegkitError
from segkit.exporters import onnx as onnx_export
from segkit.exporters.onnx import export_onnx
from segkit.prediction.onnx_backend import METADATA_KEY, OnnxBackend
from segkit.prediction.predictor import Predictor
from segkit.prediction.tiling import TileConfig
from segkit.prediction.tta import TTAConfig

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SIZES = [(40, 40), (17, 53), (96, 31), (64, 80)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(tiny_checkpoint(), path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint: Path) -> Path:
    """The letterbox U-Net exported once with the default (dynamo) exporter through the CLI."""
    out = checkpoint.parent / "model.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    return out


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    result = []
    for height, width in SIZES:
        image, _ = squares(height, width)
        result.append((image + rng.integers(-25, 25, image.shape)).clip(0, 255).astype(np.uint8))
    return result


def test_graph_is_valid_dynamic_and_carries_the_preprocessing(exported: Path) -> None:
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert proto.graph.input[0].name == "image" and dims == ["batch", 3, "height", "width"]
    assert proto.graph.output[0].name == "logits"
    metadata = json.loads({entry.key: entry.value for entry in proto.metadata_props}[METADATA_KEY])
    opset = next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))
    assert metadata["export"]["opset"] == opset == 18 and metadata["export"]["exporter"] == "dynamo"
    card = metadata["card"]
    assert card["classes"] == CLASSES and card["binary"] is False and card["ignore_index"] == 255
    kwargs = {"base_channels": 4, "depth": 2}
    assert card["model"] == {"name": "unet", "out_channels": 3, "in_channels": 3, "kwargs": kwargs}
    assert card["preprocess"]["img_size"] == [32, 32] and card["preprocess"]["resize"] == "letterbox"
    assert card["segkit_version"] == segkit.__version__ and len(card["palette"]) == 3
    assert ModelCard.from_dict(card) == tiny_checkpoint().card


def test_onnx_runtime_gives_the_torch_masks(checkpoint: Path, exported: Path) -> None:
    torch_predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    onnx_predictor = segkit.load(str(exported), device="cpu")
    assert isinstance(onnx_predictor.backend, OnnxBackend) and onnx_predictor.device == "cpu"
    assert onnx_predictor.classes == torch_predictor.classes and onnx_predictor.preprocess == torch_predictor.preprocess
    samples = images()
    for expected, got in zip(torch_predictor.predict_batch(samples, 3), onnx_predictor.predict_batch(samples, 3)):
        assert got.shape == expected.shape and (got == expected).mean() >= 0.999
    expected = torch_predictor.predict_proba(samples[1])
    np.testing.assert_allclose(onnx_predictor.predict_proba(samples[1]), expected, atol=1e-5)


def test_cli_predict_with_the_onnx_file(tmp_path: Path, checkpoint: Path, exported: Path) -> None:
    for index, image in enumerate(images()):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    args = [str(tmp_path / "*.png"), "--device", "cpu", "--tta", "flip"]
    assert main(["predict", str(checkpoint), *args, "--out", str(tmp_path / "torch")]) == 0
    assert main(["predict", str(exported), *args, "--out", str(tmp_path / "onnx")]) == 0
    for index, size in enumerate(SIZES):
        expected = np.asarray(Image.open(tmp_path / "torch" / f"{index}.png"))
        got = np.asarray(Image.open(tmp_path / "onnx" / f"{index}.png"))
        assert got.shape == size and (got == expected).mean() >= 0.999


def test_torchscript_opset_17_crop_binary_with_tiling(tmp_path: Path) -> None:
    state = tiny_checkpoint(["background", "crack"], binary=True, resize="crop", img_size=16)
    result = export_onnx(state, tmp_path / "crack.onnx", opset=17)  # below 18: the TorchScript exporter
    assert result.exporter == "torchscript" and result.opset == 17
    assert result.max_abs_diff < 1e-4 and result.input_shape == ["batch", 3, "height", "width"]
    assert len(result.checked_shapes) == 2 and "opset 17" in result.format()
    options = {"tiling": TileConfig((24, 24), overlap=0.5, batch_size=3), "tta": TTAConfig.parse("flip+scale")}
    torch_predictor = Predictor.from_checkpoint(state, device="cpu", **options)
    onnx_predictor = Predictor.from_checkpoint(tmp_path / "crack.onnx", device="cpu", **options)
    assert onnx_predictor.binary and onnx_predictor.threshold == 0.5
    for image in images():
        assert (onnx_predictor.predict(image) == torch_predictor.predict(image)).mean() >= 0.999


def test_static_export_fixes_the_input_shape(tmp_path: Path, checkpoint: Path) -> None:
    result = export_onnx(checkpoint, tmp_path / "static.onnx", dynamic=False, exporter="torchscript")
    assert result.input_shape == [1, 3, 32, 32]
    static = Predictor.from_checkpoint(tmp_path / "static.onnx", device="cpu")
    masks = static.predict_batch(images(), batch_size=4)  # letterbox: one 32x32 image at a time
    assert [mask.shape for mask in masks] == SIZES
    scaled = Predictor.from_checkpoint(tmp_path / "static.onnx", device="cpu", tta="scale")
    with pytest.raises(SegkitError, match="re-export with --dynamic"):
        scaled.predict(images()[0])


def test_export_refuses_bad_requests(tmp_path: Path, checkpoint: Path, exported: Path) -> None:
    with pytest.raises(SegkitError, match="already exists"):
        export_onnx(checkpoint, exported)
    with pytest.raises(SegkitError, match="must end in .onnx"):
        export_onnx(checkpoint, tmp_path / "model.pt")
    with pytest.raises(SegkitError, match="already an ONNX model"):
        export_onnx(exported, tmp_path / "again.onnx")
    with pytest.raises(SegkitError, match="opset 18 or newer"):
        export_onnx(checkpoint, tmp_path / "old.onnx", opset=17, exporter="dynamo")
    assert main(["export", str(checkpoint), "--out", str(exported)]) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # nothing half-written


def test_loading_onnx_files_that_segkit_did_not_write(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(SegkitError, match="not a readable ONNX model"):
        Predictor.from_checkpoint(garbage, device="cpu")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])],
        "plain",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    plain = tmp_path / "plain.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(plain))
    with pytest.raises(SegkitError, match="no 'segkit' metadata"):
        segkit.load(str(plain), device="cpu")
    with pytest.raises(SegkitError, match="not found"):
        segkit.load(str(tmp_path / "missing.onnx"), device="cpu")


def test_auto_falls_back_to_torchscript_and_explains_a_double_failure(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def cannot_capture(*args: object) -> None:
        raise RuntimeError("torch.export cannot capture this model")

    monkeypatch.setattr(onnx_export, "export_with_dynamo", cannot_capture)
    result = export_onnx(checkpoint, tmp_path / "fallback.onnx")
    assert result.exporter == "torchscript" and result.opset == 18
    assert "cannot capture this model; trying torchscript" in caplog.text
    monkeypatch.setattr(onnx_export, "export_with_torchscript", cannot_capture)
    with pytest.raises(SegkitError, match="torchscript ONNX export failed: .*--no-dynamic"):
        export_onnx(checkpoint, tmp_path / "neither.onnx")
    assert not (tmp_path / "neither.onnx").exists()


def test_parity_check_rejects_a_graph_that_computes_something_else(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = onnx_export.export_with_torchscript

    def shifted_export(model: torch.nn.Module, *args: object) -> None:
        shifted = copy.deepcopy(model)
        with torch.no_grad():
            shifted.head.bias.add_(1.0)  # every logit off by one
        export(shifted, *args)

    monkeypatch.setattr(onnx_export, "export_with_torchscript", shifted_export)
    with pytest.raises(SegkitError, match="differ from PyTorch by 1"):
        export_onnx(checkpoint, tmp_path / "wrong.onnx", exporter="torchscript")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("resize", ["letterbox", "resize", "crop"])
def test_both_backends_give_the_same_masks_with_every_option(tmp_path: Path, resize: str) -> None:
    """One pipeline around two networks: >= 99.9 % equal pixels with TTA, tiling, batching, any resize policy."""
    state = tiny_checkpoint(resize=resize, img_size=32, zero_head_bias=True)
    exported = export_onnx(state, tmp_path / "model.onnx", exporter="torchscript").path
    samples = images() + [np.asarray(Image.fromarray(images()[3]).resize((150, 110)))]
    for options in (
        {},
        {"tta": "flip+scale"},
        {"tiling": TileConfig((40, 48), overlap=0.5, batch_size=2), "tta": "flip"},
    ):
        torch_masks = Predictor.from_checkpoint(state, device="cpu", **options).predict_batch(samples, batch_size=3)
        onnx_masks = Predictor.from_checkpoint(exported, **options).predict_batch(samples, batch_size=3)
        equal = sum(int((a == b).sum()) for a, b in zip(torch_masks, onnx_masks))
        assert equal / sum(mask.size for mask in torch_masks) >= 0.999, options
        assert len(np.unique(np.concatenate([mask.ravel() for mask in torch_masks]))) >= 2  # not a trivial mask
