"""The web page in a real headless Chromium (Playwright): upload, overlay, legend, toggles, slider.

Needs the ``playwright`` Python package and a Chromium binary at /usr/bin/chromium
(Debian: ``apt-get install -y chromium``); skipped when either is missing (the ``browser``
fixture of tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from segkit.serving.app import create_app

from . import (
    CLASSES,
    encode,
    live_server,
    sample_image,
    tiny_checkpoint,
)

# The README's screenshot: written when missing or with SEGKIT_UPDATE_SCREENSHOT=1, so test runs don't churn it.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "serve.png"

# Counts the mask canvas pixels that are drawn (alpha > 0).
VISIBLE_PIXELS_JS = """() => {
  const canvas = document.getElementById("mask-canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let visible = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) visible += 1;
  return visible;
}"""


def test_page_segments_an_uploaded_image(browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect  # importable: the browser fixture skips without playwright

    image_path = tmp_path / "street.png"
    image_path.write_bytes(encode(sample_image(180, 260)))
    app = create_app(tiny_checkpoint(), device="cpu")
    with live_server(app) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        predict_requests: list[str] = []
        page.on("request", lambda request: predict_requests.append(request.url) if "/predict" in request.url else None)
        page.goto(url + "/")
        page.wait_for_selector("#legend li")  # /info loaded
        assert "unet" in page.inner_text("#model-info")

        with page.expect_response(lambda response: "/predict" in response.url) as predicted:
            page.set_input_files("#file-input", str(image_path))
        body = predicted.value.json()
        page.wait_for_selector('#mask-canvas[data-ready="true"]')

        # Canvases at the image's size, legend with every class name and its share.
        size = page.eval_on_selector("#mask-canvas", "canvas => [canvas.width, canvas.height]")
        assert size == [260, 180] == [body["width"], body["height"]]
        assert page.eval_on_selector("#image-canvas", "canvas => [canvas.width, canvas.height]") == [260, 180]
        legend = page.inner_text("#legend")
        for entry in body["classes"]:
            assert entry["name"] in legend
            assert f"{entry['share'] * 100:.1f}%" in legend
        assert [entry["name"] for entry in body["classes"]] == list(CLASSES)
        pixels = {entry["index"]: entry["pixels"] for entry in body["classes"]}
        assert sum(pixels.values()) == 260 * 180 and min(pixels.values()) > 0  # all three classes present

        # Background starts hidden: exactly the pixels of the other classes are drawn.
        assert page.evaluate(VISIBLE_PIXELS_JS) == pixels[1] + pixels[2]
        page.uncheck('#legend input[data-index="1"]')
        assert page.evaluate(VISIBLE_PIXELS_JS) == pixels[2]
        page.check('#legend input[data-index="0"]')
        assert page.evaluate(VISIBLE_PIXELS_JS) == pixels[0] + pixels[2]
        page.click("#show-all")
        assert page.evaluate(VISIBLE_PIXELS_JS) == 260 * 180
        page.click("#show-none")
        assert page.evaluate(VISIBLE_PIXELS_JS) == 0
        page.check('#legend input[data-index="1"]')
        page.check('#legend input[data-index="2"]')

        page.fill("#opacity", "35")
        assert page.eval_on_selector("#mask-canvas", "canvas => canvas.style.opacity") == "0.35"
        assert page.inner_text("#opacity-value") == "35%"

        download = page.get_attribute("#download", "href")
        assert download.startswith("blob:") and page.get_attribute("#download", "download") == "street_mask.png"
        assert "×" in page.inner_text("#status")

        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        if not SCREENSHOT.exists() or os.environ.get("SEGKIT_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

        assert errors == []

        # A broken upload shows the server's message and leaves the page usable.
        junk = tmp_path / "junk.png"
        junk.write_bytes(b"not an image at all")
        page.set_input_files("#file-input", str(junk))
        page.wait_for_selector("#status.error")
        assert "not a readable image" in page.inner_text("#status")
        assert errors and all("400" in error for error in errors)  # only the refused upload's status

        # A file over the server's limit is refused in the page, without uploading it.
        huge = tmp_path / "huge.png"
        huge.write_bytes(bytes(20 * 1024 * 1024 + 1))
        uploads = len(predict_requests)
        page.set_input_files("#file-input", str(huge))
        expect(page.locator("#status")).to_contain_text("accepts up to 20 MB")
        assert len(predict_requests) == uploads
        page.close()
    assert (tmp_path / "serve.png").stat().st_size > 10_000


def test_page_asks_for_the_api_key_once(browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect  # importable: the browser fixture skips without playwright

    image_path = tmp_path / "photo.png"
    image_path.write_bytes(encode(sample_image(60, 80)))
    key = "page-key-0123456789"
    app = create_app(tiny_checkpoint(), device="cpu", api_key=key)
    with live_server(app) as url:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        sent_keys: list[str | None] = []
        page.on(
            "request",
            lambda request: (
                sent_keys.append(request.headers.get("authorization")) if "/predict" in request.url else None
            ),
        )
        page.goto(url + "/")
        page.wait_for_selector("#key-form:not([hidden])")
        assert page.inner_text("#legend") == ""  # /info was refused: nothing shown yet

        page.fill("#api-key", "not-the-key")
        page.click("#key-submit")
        # expect() polls from Playwright's side: a string predicate would need 'unsafe-eval', which the page's CSP refuses.
        expect(page.locator("#key-message")).to_contain_text("refused")
        assert page.is_visible("#key-form")

        page.fill("#api-key", key)
        page.click("#key-submit")
        page.wait_for_selector("#legend li")
        assert page.is_hidden("#key-form")
        with page.expect_response(lambda response: "/predict" in response.url) as predicted:
            page.set_input_files("#file-input", str(image_path))
        assert predicted.value.status == 200
        page.wait_for_selector('#mask-canvas[data-ready="true"]')
        assert sent_keys == [f"Bearer {key}"]

        page.reload()  # the same tab: the key is kept, not asked again
        page.wait_for_selector("#legend li")
        assert page.is_hidden("#key-form")
        assert page.evaluate("sessionStorage.getItem('segkit-api-key')") == key
        assert errors == []
        page.close()
