"""The serve API: formats of /predict, /info, /health, the page, concurrency and the CLI wiring."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import segkit
from segkit.checkpoint import save_checkpoint
from segkit.cli import build_parser
from segkit.errors import SegkitError
from segkit.prediction.predictor import Predictor
from segkit.serving import app as app_module
from segkit.serving.app import create_app
from segkit.serving.options import API_KEY_ENV
from segkit.visualize import PALETTE

from . import (
    CLASSES,
    decode,
    encode,
    sample_image,
    tiny_checkpoint,
)


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "tiny.pt"
    save_checkpoint(tiny_checkpoint(), path)
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint_path: Path) -> Predictor:
    return Predictor.from_checkpoint(checkpoint_path, device="cpu")


@pytest.fixture(scope="module")
def client(checkpoint_path: Path) -> TestClient:
    with TestClient(create_app(checkpoint_path, device="cpu")) as test_client:
        yield test_client


IMAGE = sample_image(40, 56)


def post_file(client: TestClient, data: bytes, query: str = "", content_type: str = "image/png"):
    return client.post(f"/predict{query}", files={"file": ("photo.png", data, content_type)})


def test_health_and_info(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["model"] == "unet"
    assert info["model_options"] == {"base_channels": 4, "depth": 2}
    assert info["classes"] == list(CLASSES)
    assert info["palette"] == PALETTE[:3].tolist()
    assert info["input_size"] == [32, 32]
    assert info["preprocess"]["resize"] == "letterbox" and "augment" not in info["preprocess"]
    assert (info["binary"], info["threshold"], info["device"]) == (False, 0.5, "cpu")
    assert info["segkit_version"] == segkit.__version__
    assert (info["max_upload_bytes"], info["max_pixels"], info["batch_size"]) == (20 * 1024 * 1024, 25_000_000, 4)


def test_png_mask_is_the_predictors_mask_at_original_size(client: TestClient, predictor: Predictor) -> None:
    response = post_file(client, encode(IMAGE))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["server-timing"].startswith("inference;dur=")
    mask = decode(response.content)
    assert mask.mode == "P" and mask.size == (56, 40)
    assert mask.getpalette()[:9] == PALETTE[:3].reshape(-1).tolist()
    expected = predictor.predict(IMAGE)
    np.testing.assert_array_equal(np.asarray(mask), expected)
    assert len(np.unique(expected)) == 3  # the fixture model really separates the image


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream", "IMAGE/JPEG; name=x"])
def test_raw_body(client: TestClient, predictor: Predictor, content_type: str) -> None:
    data = encode(IMAGE, "JPEG", quality=95)
    response = client.post("/predict", content=data, headers={"Content-Type": content_type})
    assert response.status_code == 200
    decoded = np.asarray(decode(data).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(decode(response.content)), predictor.predict(decoded))


def test_json_format(client: TestClient, predictor: Predictor) -> None:
    response = post_file(client, encode(IMAGE), "?format=json")
    assert response.status_code == 200
    body = response.json()
    assert (body["width"], body["height"]) == (56, 40)
    expected = predictor.predict(IMAGE)
    counts = np.bincount(expected.ravel(), minlength=3)
    assert [entry["index"] for entry in body["classes"]] == [0, 1, 2]
    assert [entry["name"] for entry in body["classes"]] == list(CLASSES)
    assert [entry["color"] for entry in body["classes"]] == PALETTE[:3].tolist()
    assert [entry["pixels"] for entry in body["classes"]] == counts.tolist()
    assert sum(entry["share"] for entry in body["classes"]) == pytest.approx(1.0, abs=1e-5)
    assert body["classes"][1]["share"] == pytest.approx(counts[1] / expected.size, abs=1e-6)
    mask = decode(base64.b64decode(body["mask_png_base64"]))
    np.testing.assert_array_equal(np.asarray(mask), expected)


def test_overlay_format(client: TestClient, predictor: Predictor) -> None:
    response = post_file(client, encode(IMAGE), "?format=overlay&alpha=1")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    blended = np.asarray(decode(response.content), dtype=np.float32)
    assert blended.shape == (40, 56, 3)
    mask = predictor.predict(IMAGE)
    # alpha=1: foreground pixels take the class colour, background keeps the image (JPEG tolerance).
    colour = PALETTE[mask].astype(np.float32)
    expected = np.where((mask > 0)[..., None], colour, IMAGE.astype(np.float32))
    assert np.abs(blended - expected).mean() < 12
    transparent = np.asarray(decode(post_file(client, encode(IMAGE), "?format=overlay&alpha=0").content), np.float32)
    assert np.abs(transparent - IMAGE).mean() < 6


@pytest.mark.parametrize("query", ["?format=gif", "?format=overlay&alpha=1.5", "?format=overlay&alpha=x"])
def test_bad_query_is_422(client: TestClient, query: str) -> None:
    response = post_file(client, encode(IMAGE), query)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_exif_orientation_is_applied(client: TestClient) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    data = encode(IMAGE, "JPEG", exif=exif.tobytes())
    body = post_file(client, data, "?format=json", "image/jpeg").json()
    assert (body["width"], body["height"]) == (40, 56)  # displayed size, not stored size


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_any_pixel_mode(client: TestClient, mode: str) -> None:
    image = Image.fromarray(IMAGE).convert("RGBA" if mode == "RGBA" else "RGB")
    if mode == "I;16":
        image = Image.fromarray(IMAGE[..., 0].astype(np.uint16) * 200)
    elif mode != "RGBA":
        image = image.convert(mode)
    response = post_file(client, encode(image), "?format=json")
    assert response.status_code == 200, response.text
    assert (response.json()["width"], response.json()["height"]) == (56, 40)


def test_page_and_static_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for element_id in ('id="file-input"', 'id="mask-canvas"', 'id="legend"', 'id="opacity"', 'id="download"'):
        assert element_id in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "format=json" in script.text
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/../app.py").status_code == 404
    for text in (page.text, script.text):  # no CDN or other host: the page works offline
        assert re.search(r"(src|href)=\"(https?:)?//|https?://", text) is None


def test_openapi_documents_the_upload(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    content = schema["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert "image/*" in content
    assert {"400", "413", "415"} <= set(schema["responses"])


def test_concurrent_requests_share_batches_on_one_thread(checkpoint_path: Path, predictor: Predictor) -> None:
    """8 requests at once with batches of up to 4: fewer model calls, never two at a time, each answer its own."""
    served = Predictor.from_checkpoint(checkpoint_path, device="cpu")
    batches: list[int] = []
    active, peak, guard = 0, 0, threading.Lock()
    original = served.predict_batch

    def counting_predict_batch(images, batch_size=None):
        nonlocal active, peak
        with guard:
            active += 1
            peak = max(peak, active)
            batches.append(len(images))
        try:
            return original(images, batch_size)
        finally:
            with guard:
                active -= 1

    served.predict_batch = counting_predict_batch  # observe the real predictor's calls
    images = [sample_image(30 + 4 * i, 50 - 2 * i, seed=i) for i in range(8)]
    app = create_app(served, batch_size=4, batch_wait_ms=300)
    with TestClient(app) as test_client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda image: post_file(test_client, encode(image)), images))
    assert [r.status_code for r in responses] == [200] * 8
    for image, response in zip(images, responses, strict=True):  # images of different sizes, each its own mask
        np.testing.assert_array_equal(np.asarray(decode(response.content)), predictor.predict(image))
    assert peak == 1
    assert sum(batches) == 8 and max(batches) <= 4 and len(batches) < 8, batches


def test_one_request_at_a_time_with_batch_size_1(checkpoint_path: Path) -> None:
    served = Predictor.from_checkpoint(checkpoint_path, device="cpu")
    batches: list[int] = []
    original = served.predict_batch
    served.predict_batch = lambda images, batch_size=None: batches.append(len(images)) or original(images)
    with TestClient(create_app(served, batch_size=1, batch_wait_ms=50)) as test_client, ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(lambda seed: post_file(test_client, encode(sample_image(seed=seed))).status_code, range(4))
        )
    assert statuses == [200] * 4 and batches == [1, 1, 1, 1]


def test_full_queue_answers_503_with_retry_after(checkpoint_path: Path) -> None:
    served = Predictor.from_checkpoint(checkpoint_path, device="cpu")
    release, entered = threading.Event(), threading.Event()
    original = served.predict_batch

    def blocking_predict_batch(images, batch_size=None):
        entered.set()
        release.wait(10)
        return original(images)

    served.predict_batch = blocking_predict_batch
    app = create_app(served, batch_size=1, max_queue=2)
    with TestClient(app) as test_client, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post_file, test_client, encode(IMAGE)) for _ in range(2)]
        assert entered.wait(10)
        deadline = time.monotonic() + 10
        while app.state.admission.count < 2 and time.monotonic() < deadline:  # both requests are in
            time.sleep(0.01)
        busy = post_file(test_client, encode(IMAGE))
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
        assert "busy" in busy.json()["detail"]
        release.set()
        assert [future.result().status_code for future in held] == [200, 200]
        assert post_file(test_client, encode(IMAGE)).status_code == 200  # room again


def test_app_from_loaded_checkpoint_dict_and_binary_mode() -> None:
    checkpoint = tiny_checkpoint(("background", "crack"), binary=True)
    with TestClient(create_app(checkpoint, device="cpu")) as test_client:
        info = test_client.get("/info").json()
        assert info["binary"] is True and info["classes"] == ["background", "crack"]
        body = post_file(test_client, encode(IMAGE), "?format=json").json()
    assert [entry["name"] for entry in body["classes"]] == ["background", "crack"]
    mask = np.asarray(decode(base64.b64decode(body["mask_png_base64"])))
    assert set(np.unique(mask)) <= {0, 1}
    assert sum(entry["pixels"] for entry in body["classes"]) == 40 * 56


def test_bad_checkpoint_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(SegkitError, match="checkpoint not found"):
        create_app(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SegkitError, match="junk.pt"):
        create_app(tmp_path / "junk.pt")
    with pytest.raises(SegkitError, match="upload limits must be positive"):
        create_app(tiny_checkpoint(), max_upload_bytes=0)


def test_cli_builds_the_server(monkeypatch: pytest.MonkeyPatch, checkpoint_path: Path) -> None:
    from segkit.serving import server as server_module

    configs: list = []
    monkeypatch.setattr(server_module, "run_server", configs.append)
    for name in (app_module.ENV_CHECKPOINT, app_module.ENV_OPTIONS, API_KEY_ENV):
        monkeypatch.setenv(name, "")  # recorded, so the values serve() sets are undone after the test
        monkeypatch.delenv(name)

    args = build_parser().parse_args(
        [
            "serve",
            str(checkpoint_path),
            "--port",
            "8123",
            "--device",
            "cpu",
            "--max-upload-mb",
            "2",
            "--keep-alive",
            "3",
        ]
    )
    assert args.func(args) == 0
    config = configs[-1]
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 8123, 1)
    assert (config.timeout_keep_alive, config.header_timeout_s, config.timeout_graceful_shutdown) == (3, 10, 30)
    assert config.http is server_module.HeaderTimeoutProtocol
    options = config.app.state.options
    assert options.max_upload_bytes == 2 * 1024 * 1024 and options.max_pixels == 25_000_000
    assert options.allowed_hosts == ("localhost", "127.0.0.1", "[::1]")  # loopback address: loopback names
    assert options.api_key is None and options.batch_size == 4

    # Several workers: uvicorn imports an app factory that reads the settings from the environment.
    monkeypatch.setenv(API_KEY_ENV, "from-the-environment")
    args = build_parser().parse_args(
        [
            "serve",
            str(checkpoint_path),
            "--workers",
            "3",
            "--host",
            "0.0.0.0",
            "--max-megapixels",
            "8",
            "--batch-size",
            "2",
            "--cors-origin",
            "https://a.example",
        ]
    )
    assert args.func(args) == 0
    config = configs[-1]
    assert (config.app, config.factory, config.workers, config.host) == (
        "segkit.serving.app:app_from_env",
        True,
        3,
        "0.0.0.0",
    )
    monkeypatch.setenv(
        app_module.ENV_OPTIONS, json.dumps({**json.loads(os.environ[app_module.ENV_OPTIONS]), "device": "cpu"})
    )
    factory_app = app_module.app_from_env()
    options = factory_app.state.options
    assert (options.max_pixels, options.batch_size, options.api_key) == (8_000_000, 2, "from-the-environment")
    assert options.allowed_hosts is None and options.cors_origins == ("https://a.example",)
    key = {"Authorization": "Bearer from-the-environment"}
    assert TestClient(factory_app).get("/info", headers=key).json()["classes"] == list(CLASSES)


def test_cli_refuses_bad_options(tmp_path: Path, checkpoint_path: Path) -> None:
    args = build_parser().parse_args(["serve", str(tmp_path / "missing.pt"), "--workers", "2"])
    with pytest.raises(SegkitError, match="checkpoint not found"):
        args.func(args)
    for bad in (["--max-upload-mb", "0"], ["--batch-size", "0"], ["--header-timeout", "0"], ["--max-queue", "-1"]):
        args = build_parser().parse_args(["serve", str(checkpoint_path), *bad])
        with pytest.raises(SegkitError, match="must be positive"):
            args.func(args)


def test_serves_an_exported_onnx_model(checkpoint_path: Path, predictor: Predictor, tmp_path: Path) -> None:
    """`segkit serve model.onnx`: the same masks and /info as the checkpoint, through ONNX Runtime."""
    from segkit.exporters.onnx import export_onnx

    export_onnx(checkpoint_path, tmp_path / "tiny.onnx", exporter="torchscript", opset=17)
    with TestClient(create_app(tmp_path / "tiny.onnx", device="cpu")) as onnx_client:
        info = onnx_client.get("/info").json()
        assert info["model"] == "unet" and info["classes"] == list(CLASSES)
        response = post_file(onnx_client, encode(IMAGE))
    assert response.status_code == 200
    mask = np.asarray(decode(response.content))
    assert (mask == predictor.predict(IMAGE)).mean() >= 0.999


def test_serve_imports_without_pytorch() -> None:
    """`segkit serve model.onnx` must work in an install without PyTorch: nothing in serve/ imports it."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import segkit.serving.app, segkit.serving.server, segkit.serving.batching, segkit.cli.serve\n"
    )
    source = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(source)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
