"""Who may use the server: the API key, accepted Host names, CORS, the warning on open addresses."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from segkit.cli import build_parser
from segkit.errors import SegkitError
from segkit.serving import security
from segkit.serving import server as server_module
from segkit.serving.app import create_app
from segkit.serving.options import API_KEY_ENV, ServeOptions
from segkit.serving.security import LOOPBACK_HOSTS, default_allowed_hosts, is_loopback

from . import encode, live_server, sample_image, tiny_checkpoint

KEY = "s3cret-key-0123456789"
PNG = encode(sample_image(24, 32))


@pytest.fixture(scope="module")
def keyed_app() -> FastAPI:
    return create_app(tiny_checkpoint(), device="cpu", api_key=KEY)


@pytest.fixture(scope="module")
def client(keyed_app: FastAPI) -> TestClient:
    with TestClient(keyed_app) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_api_key_is_required_on_predict_and_info(client: TestClient) -> None:
    for headers in ({}, bearer("wrong"), bearer(KEY + "x"), {"Authorization": KEY}, {"X-API-Key": KEY}):
        for response in (client.get("/info", headers=headers), client.post("/predict", content=PNG, headers=headers)):
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer KEY" in response.json()["detail"]
    assert "wrong API key" in client.get("/info", headers=bearer("wrong")).json()["detail"]
    assert client.get("/info", headers=bearer(KEY)).json()["classes"] == ["background", "cat", "dog"]
    answer = client.post("/predict", content=PNG, headers={**bearer(KEY), "Content-Type": "image/png"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"


def test_health_page_and_docs_stay_open(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["API key"]["scheme"] == "bearer"
    assert schema["paths"]["/predict"]["post"]["security"] == [{"API key": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_no_key_configured_means_open(monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app(tiny_checkpoint(), device="cpu")) as open_client:
        assert open_client.get("/info").status_code == 200


def test_key_is_compared_in_constant_time(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = security.hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return original(given, expected)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    assert client.get("/info", headers=bearer("x")).status_code == 401
    assert client.get("/info", headers=bearer(KEY * 3)).status_code == 401
    assert [(len(given), len(expected)) for given, expected in compared] == [(32, 32), (32, 32)]  # digests


def test_unauthenticated_large_upload_reads_401_on_urllib(keyed_app: FastAPI) -> None:
    """The 401 comes before the body is read; urllib (sending the whole body first) still reads it."""
    with live_server(keyed_app) as url:
        request = urllib.request.Request(
            f"{url}/predict", data=bytes(8 * 1024 * 1024), headers={"Content-Type": "image/png"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401


@pytest.mark.parametrize("key", ["", "has space", "tab\tkey", "ünïcode", "x" * 257])
def test_invalid_keys_are_refused(key: str) -> None:
    with pytest.raises(SegkitError, match="API key must be"):
        ServeOptions(api_key=key)


def test_empty_key_variable_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(API_KEY_ENV, "")
    args = build_parser().parse_args(["serve", str(tmp_path / "model.pt")])
    with pytest.raises(SegkitError, match="SEGKIT_API_KEY is set but empty"):
        args.func(args)


def test_empty_key_option_blames_the_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    args = build_parser().parse_args(["serve", str(tmp_path / "model.pt"), "--api-key", ""])
    with pytest.raises(SegkitError, match="--api-key is empty") as raised:
        args.func(args)
    assert API_KEY_ENV not in str(raised.value)


# ------------------------------------------------------------------ hosts, CORS
def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"):
        assert is_loopback(host)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert not is_loopback(host)
    assert default_allowed_hosts("127.0.0.1") == LOOPBACK_HOSTS
    assert default_allowed_hosts("0.0.0.0") is None


def test_allowed_hosts_refuse_other_host_names() -> None:
    app = create_app(tiny_checkpoint(), device="cpu", allowed_hosts=LOOPBACK_HOSTS)
    with TestClient(app, base_url="http://127.0.0.1:8000") as local:
        assert local.get("/health").status_code == 200
        assert local.get("/health", headers={"Host": "localhost:8000"}).status_code == 200
        assert local.get("/health", headers={"Host": "[::1]:8000"}).status_code == 200
        # DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1
        refused = local.post("/predict", content=PNG, headers={"Host": "attacker.example", "Content-Type": "image/png"})
        assert refused.status_code == 400 and refused.text == "Invalid host header"
    wildcard = create_app(tiny_checkpoint(), device="cpu", allowed_hosts=("*.example.org",))
    with TestClient(wildcard, base_url="http://seg.example.org") as named:
        assert named.get("/health").status_code == 200
        assert named.get("/health", headers={"Host": "example.net"}).status_code == 400


def preflight(client: TestClient, origin: str):
    return client.options(
        "/predict",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )


def test_cors_is_off_unless_an_origin_is_given(client: TestClient) -> None:
    response = preflight(client, "https://elsewhere.example")
    assert "access-control-allow-origin" not in response.headers
    assert (
        "access-control-allow-origin"
        not in client.get("/health", headers={"Origin": "https://elsewhere.example"}).headers
    )

    app = create_app(tiny_checkpoint(), device="cpu", api_key=KEY, cors_origins=("https://app.example",))
    with TestClient(app) as cors_client:
        allowed = preflight(cors_client, "https://app.example")
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-origin" not in preflight(cors_client, "https://elsewhere.example").headers
        answer = cors_client.post(
            "/predict",
            content=PNG,
            headers={**bearer(KEY), "Content-Type": "image/png", "Origin": "https://app.example"},
        )
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://app.example"


# ------------------------------------------------------------------ the warning on open addresses
@pytest.mark.parametrize(
    ("host", "key", "warned"),
    [("0.0.0.0", None, True), ("192.168.1.10", None, True), ("0.0.0.0", KEY, False), ("127.0.0.1", None, False)],
)
def test_open_address_without_key_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, host: str, key: str | None, warned: bool
) -> None:
    monkeypatch.setattr(server_module, "run_server", lambda config: None)
    with caplog.at_level(logging.WARNING, logger=server_module.logger.name):
        server_module.serve(tiny_checkpoint(), ServeOptions(device="cpu", api_key=key), host=host)
    assert ("without an API key" in caplog.text) is warned
