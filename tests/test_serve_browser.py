"""The `serve` page in a real browser (the system's chromium, driven by playwright): upload through
the file input, then what the page shows must be what the API answers for the same file."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_helpers import photos, small_cnn, start_server

from fashion_jax.data.dataset import CLASS_NAMES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def sync_playwright():
    """playwright's entry point, or a skip (a failure in CI, which installs both) saying what to
    install: playwright cannot download a browser here, it must drive the system's chromium."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        missing.append("the playwright package (pip install 'fashion-jax[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append("chromium (apt-get install -y chromium)")
    if missing:
        message = f"needs {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return start


@contextlib.contextmanager
def page_of(url: str, height: int = 1000, errors: list[str] | None = None):
    """The served page in the system's chromium, loaded and ready; its script errors go to
    `errors`."""
    start = sync_playwright()
    with start() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": height})
            if errors is not None:
                page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            yield page
        finally:
            browser.close()


def on_screen(png: bytes, side: int = 28) -> np.ndarray:
    """The side x side grey image a screenshot of the upscaled canvas shows: the centre pixel of
    each cell (the canvas is drawn pixelated, so every cell is one flat colour), border cropped."""
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float64)[1:-1, 1:-1]
    rows = ((np.arange(side) + 0.5) * shot.shape[0] / side).astype(int)
    cols = ((np.arange(side) + 0.5) * shot.shape[1] / side).astype(int)
    assert min(shot.shape) >= 4 * side  # shown upscaled, not at 28 pixels
    return shot[np.ix_(rows, cols)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    running = start_server(small_cnn(folder / "cnn"), folder)
    yield running
    running.stop()


def test_an_uploaded_photo_shows_the_apis_class_bars_image_and_feature_maps(server, tmp_path):
    photo = tmp_path / "garment.png"
    photo.write_bytes(photos(3, seed=5)[1])
    with httpx.Client(base_url=server.url, timeout=60) as client:
        files = {"file": (photo.name, photo.read_bytes())}
        expected = client.post("/api/predict", files=files).json()
        explained = client.post("/api/explain", files=files).json()
    layers = {m["layer"]: m["channels"] for m in explained["feature_maps"]}
    assert layers == {"conv0": 4, "conv1": 8}
    image = np.frombuffer(base64.b64decode(explained["image"]), np.uint8).reshape(28, 28)
    assert image.max() - image.min() > 100  # a picture, so the on-screen check below can fail
    errors: list[str] = []
    with page_of(server.url, height=900, errors=errors) as page:
        assert "cnn" in page.locator("#model-summary").text_content()
        assert page.locator("#filters canvas").count() == 4  # conv0 of the small CNN
        page.set_input_files("#file-input", str(photo))
        card = page.locator(".card[data-state=done]")
        card.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        assert card.get_attribute("data-file") == "garment.png"
        assert card.locator(".predicted-class").text_content() == expected["class"]
        bars = card.locator(".bar")
        shown = [float(bars.nth(k).get_attribute("data-probability")) for k in range(10)]
        np.testing.assert_allclose(shown, explained["probabilities"], rtol=1e-6)
        for top in expected["top3"]:
            bar = card.locator(f'.bar[data-class="{top["class"]}"]')
            assert float(bar.get_attribute("data-probability")) == pytest.approx(
                top["probability"], rel=1e-6
            )
        assert card.locator(".bar.top").get_attribute("data-class") == expected["class"]

        seen = card.locator("canvas.model-input")
        assert (seen.get_attribute("width"), seen.get_attribute("height")) == ("28", "28")
        np.testing.assert_allclose(on_screen(seen.screenshot()), image, atol=2)
        for layer, channels in layers.items():
            maps = card.locator(f'.fmap-layer[data-layer="{layer}"] canvas.fmap')
            assert maps.count() == channels
        assert errors == []


OVERLAY_ALPHA = """canvas => Array.from(
    canvas.getContext("2d").getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 3))"""


def test_the_why_overlay_is_the_apis_map_for_each_method_and_the_runner_up(server, tmp_path):
    photo = tmp_path / "garment.png"
    photo.write_bytes(photos(3, seed=6)[2])
    with httpx.Client(base_url=server.url, timeout=60) as client:
        answer = client.post("/api/explain", files={"file": (photo.name, photo.read_bytes())})
    attributions = answer.json()["attributions"]
    assert [a["label"] for a in attributions] == [
        t["label"] for t in answer.json()["prediction"]["top3"][:2]
    ]
    with page_of(server.url) as page:
        page.set_input_files("#file-input", str(photo))
        card = page.locator(".card[data-state=done]")
        card.wait_for(timeout=60_000)
        methods = card.locator("select.method option").all_text_contents()
        assert methods == list(attributions[0]["maps"]) and "gradcam" in methods
        for method in methods:
            card.locator("select.method").select_option(method)
            for k, item in enumerate(attributions):
                overlay = card.locator("canvas.overlay").nth(k)
                assert overlay.get_attribute("data-method") == method
                assert overlay.get_attribute("data-label") == str(item["label"])
                shown = np.asarray(overlay.evaluate(OVERLAY_ALPHA), float).reshape(28, 28)
                m = np.asarray(item["maps"][method])
                assert m.max() > 0
                np.testing.assert_allclose(shown, np.round(255 * m / m.max()), atol=1)
        caption = card.locator(".attribution[data-which=runner-up] figcaption")
        assert caption.text_content().startswith(f"why not {attributions[1]['class']}")
        card.locator("select.method").select_option("integrated-gradients")
        page.screenshot(path=str(tmp_path / "why.png"), full_page=True)


def test_the_mistakes_view_draws_the_apis_gallery(server, real_data, tmp_path):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        gallery = client.get("/api/mistakes").json()
    items = [item for group in gallery["groups"] for item in group["items"]]
    assert gallery["groups"] and items
    for group in gallery["groups"]:  # each image's label is the pair's true class
        assert group["true"] != group["predicted"]
        assert {CLASS_NAMES[real_data.test_y[item["index"]]] for item in group["items"]} == {
            group["true"]
        }
    with page_of(server.url) as page:
        page.click("#show-mistakes")
        page.wait_for_selector("body[data-mistakes=shown]", timeout=120_000)
        tiles = page.locator("#mistakes figure.mistake")
        assert tiles.count() == len(items)
        assert [int(tiles.nth(k).get_attribute("data-index")) for k in range(len(items))] == [
            item["index"] for item in items
        ]
        shown = np.asarray(tiles.nth(0).locator("canvas.overlay").evaluate(OVERLAY_ALPHA))
        m = np.asarray(items[0]["map"])
        np.testing.assert_allclose(shown.reshape(28, 28), np.round(255 * m / m.max()), atol=1)
