"""A real ``cliplens serve`` process on 127.0.0.1 with the demo model: a bounded load test, graceful
shutdown, and the web page driven in headless Chromium."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cliplens.bench.serve import ServerProcess, mixed_calls, png_bytes, scrape_metric, send
from cliplens.inputs.demo_data import ShapeScene, generate, render_scene
from conftest import ARTIFACTS
from image_corpus import CORPUS

pytestmark = pytest.mark.slow  # a real server process, real clients and a browser

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def index_dir(demo_index):
    return demo_index


@pytest.fixture(scope="module")
def live(index_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("live-log") / "serve.log"
    with ServerProcess(["--model", "demo", "--backend", "torch", "--index", str(index_dir)], log=log) as server:
        yield server


def _scene_png(tmp_path: Path, name: str, shape: str, colour: str, background: str = "white", count: int = 1) -> Path:
    import random

    path = tmp_path / name
    render_scene(ShapeScene(shape, colour, count, "large", background), random.Random(0), 128).save(path)
    return path


def test_load_1000_mixed_requests_from_32_clients_gives_no_5xx(live):
    images = [png_bytes(sample.image) for sample in generate(16, seed=3)]
    broken = [build() for _, build, expected in CORPUS if expected != "ok"][:6]
    calls = mixed_calls(images, 1000, seed=2, search=True, broken=broken)
    result = send(live.url, calls, 32)
    figures = result.to_dict()
    print(f"\nload test: {figures}")  # p50/p99 in the test log
    assert len(result.outcomes) == 1000 and not result.server_errors, result.server_errors[:3]
    by_kind: dict[str, set[int]] = {}
    for outcome in result.outcomes:
        by_kind.setdefault(outcome.kind, set()).add(outcome.status)
    assert by_kind["broken-image"] == {422} and by_kind["missing-labels"] == {422}
    assert all(statuses == {200} for kind, statuses in by_kind.items() if kind not in ("broken-image", "missing-labels"))
    assert scrape_metric(live.url, "cliplens_encoder_batch_images_count") < scrape_metric(
        live.url, "cliplens_images_encoded_total"), "concurrent requests were never merged into one batch"
    assert httpx.get(live.url + "/healthz").status_code == 200


def test_graceful_shutdown_lets_a_request_in_flight_finish(tmp_path):
    server = ServerProcess(["--model", "demo", "--backend", "torch", "--max-upload-mb", "400"], log=tmp_path / "serve.log")
    big = [png_bytes(Image.effect_noise((1024, 1024), 64).convert("RGB")) for _ in range(3)]
    files = [("images", (f"{i}.png", big[i % 3], "image/png")) for i in range(48)]
    answer: dict = {}

    def slow_request():
        answer["response"] = httpx.post(server.url + "/v1/rank", files=files, data={"prompt": "a red circle"},
                                        timeout=120)

    thread = threading.Thread(target=slow_request)
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while scrape_metric(server.url, "cliplens_requests_in_flight") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # (the metrics request itself is one in flight)
        assert thread.is_alive(), "the request finished before the shutdown could start"
    finally:
        code = server.stop()
    thread.join(60)
    assert answer["response"].status_code == 200 and len(answer["response"].json()["results"]) == 48
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/healthz", timeout=2)


# --- the web page in headless Chromium ----------------------------------------------------------------

def test_classify_tab_shows_sorted_bars_and_none_of_these(live, page, tmp_path):
    image = _scene_png(tmp_path, "two-red-circles.png", "circle", "red", count=2)
    page.goto(live.url)
    page.wait_for_selector("#model:has-text('demo')")
    assert not page.is_visible("#key-form")  # no key needed here
    page.set_input_files("#classify-image", str(image))
    page.fill("#classify-labels", "a blue square\na red circle\na green triangle\na yellow star")
    page.click("#classify-run")
    page.wait_for_selector(".bar-row")
    rows = page.locator(".bar-row")
    assert rows.count() == 4
    labels = [rows.nth(i).get_attribute("data-label") for i in range(4)]
    probabilities = [float(rows.nth(i).get_attribute("data-probability")) for i in range(4)]
    assert labels[0] == "a red circle" and probabilities == sorted(probabilities, reverse=True)
    assert rows.nth(0).locator(".bar-value").inner_text().endswith("%")
    width = rows.nth(0).locator(".fill").evaluate("e => e.getBoundingClientRect().width")
    track = rows.nth(0).locator(".bar").evaluate("e => e.getBoundingClientRect().width")
    assert width > 0.5 * track
    assert page.locator(".none-of-these").inner_text().startswith("None of these:")
    assert page.locator("#classify-preview").evaluate("e => e.naturalWidth") == 128
    page.screenshot(path=ARTIFACTS / "serve-classify.png", full_page=True)
    page.fill("#classify-labels", "a purple cross\na green triangle")  # nothing fits: the page says so
    page.click("#classify-run")
    page.wait_for_selector(".none-of-these.strong")
    assert "looks more like" in page.locator(".none-of-these.strong").inner_text()
    assert page.errors == []


def test_errors_show_as_readable_messages(live, page, tmp_path):
    page.goto(live.url)
    page.click("#classify-run")
    error = page.locator("#tab-classify .error")
    error.wait_for()
    assert "Choose or drop an image" in error.inner_text()
    broken = tmp_path / "text-named.jpg"
    broken.write_bytes(b"this is not a photo\n" * 10)
    page.set_input_files("#classify-image", str(broken))
    page.fill("#classify-labels", "a red circle")
    page.click("#classify-run")
    page.wait_for_selector("#tab-classify .error:has-text('not an image')")
    text = error.inner_text()
    assert text.startswith("text-named.jpg:") and "{" not in text
    page.screenshot(path=ARTIFACTS / "serve-error.png", full_page=True)


def test_caption_search_and_rank_tabs(live, page, tmp_path):
    page.goto(live.url + "/#caption")
    page.set_input_files("#caption-image", str(_scene_png(tmp_path, "star.png", "star", "blue", "gray")))
    page.click("#caption-run")
    page.wait_for_selector("#caption-llm")
    assert page.locator("#caption-llm").inner_text().startswith("[Image Attached:")
    assert "star" in page.locator("#caption-llm").inner_text() and page.locator(".bank").count() == 3

    page.click("[data-tab=search]")
    page.fill("#search-query", "a red circle")
    page.fill("#search-top", "6")
    page.click("#search-run")
    page.wait_for_selector("#search-results figure img")
    page.wait_for_function("() => [...document.querySelectorAll('#search-results img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#search-results figure").count() == 6
    matches = [float(page.locator("#search-results figure").nth(i).get_attribute("data-match")) for i in range(6)]
    assert matches[0] >= 0.5 and matches == sorted(matches, key=lambda m: m < 0.5)  # probable matches first
    assert page.locator("#search-results .match-line").count() == (1 if min(matches) < 0.5 else 0)
    page.screenshot(path=ARTIFACTS / "serve-search.png", full_page=True)
    page.fill("#search-query", "a dog")  # words the demo model cannot read: no photo can match them
    page.click("#search-run")
    page.wait_for_selector("#search-results .match-line:has-text('No photo matches')")
    page.screenshot(path=ARTIFACTS / "serve-search-no-match.png", full_page=True)
    page.fill("#search-query", "")  # filters alone: the generated photos were taken by no camera
    page.click("#tab-search details summary")
    page.fill("#search-camera", "leica")
    page.click("#search-run")
    page.wait_for_selector("#search-results p:has-text('No results.')")
    page.fill("#search-camera", "")
    page.fill("#search-after", "2000")
    page.click("#search-run")
    page.wait_for_selector("#search-results figure img")
    assert page.locator("#search-results figure").count() == 6  # every generated file is dated after 2000
    page.fill("#search-after", "")
    chosen = page.locator("#search-results figure").first.get_attribute("data-id")
    page.locator("#search-results figure").first.locator(".more-like").click()
    page.wait_for_function(f"() => document.querySelector('#search-results figure') && "
                           f"document.querySelector('#search-results figure').dataset.id !== '{chosen}'")
    ids = [page.locator("#search-results figure").nth(i).get_attribute("data-id") for i in range(6)]
    assert chosen not in ids and len(set(ids)) == 6

    page.click("[data-tab=rank]")
    paths = [_scene_png(tmp_path, f"{colour}-{shape}.png", shape, colour)
             for shape, colour in [("square", "blue"), ("circle", "red"), ("triangle", "green"), ("star", "yellow")]]
    page.fill("#rank-prompt", "a red circle")
    page.set_input_files("#rank-images", [str(p) for p in paths])
    page.click("#rank-run")
    page.wait_for_selector("#rank-results figure")
    names = [page.locator("#rank-results figure").nth(i).get_attribute("data-name") for i in range(4)]
    assert names[0] == "red-circle.png" and sorted(names) == sorted(p.name for p in paths)
    assert page.errors == []


def test_page_fits_a_phone(live, browser, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    phone = context.new_page()
    phone.goto(live.url)
    phone.set_input_files("#classify-image", str(_scene_png(tmp_path, "c.png", "circle", "red")))
    phone.fill("#classify-labels", "a red circle with a rather long caption that must wrap\na blue square")
    phone.click("#classify-run")
    phone.wait_for_selector(".bar-row")
    overflow = phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    phone.screenshot(path=ARTIFACTS / "serve-phone.png", full_page=True)
    context.close()


def test_page_asks_for_the_api_key_and_then_works(demo_model, page, tmp_path):
    import uvicorn

    from cliplens.bench.serve import free_port
    from cliplens.service import ServiceConfig, create_app

    port = free_port()
    app = create_app(ServiceConfig(model="demo", api_key="page-key"), encoder=demo_model)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#classify-image", str(_scene_png(tmp_path, "c.png", "circle", "red")))
        page.fill("#classify-labels", "a red circle\na blue square")
        page.click("#classify-run")
        page.wait_for_selector("#key-form:visible")
        assert "API key" in page.locator("#tab-classify .error").inner_text()
        page.fill("#api-key", "page-key")
        page.click("#key-form button")
        page.click("#classify-run")
        page.wait_for_selector(".bar-row")
        assert page.locator(".bar-row").first.get_attribute("data-label") == "a red circle"
        assert [e for e in page.errors if "401" not in e] == []  # the browser logs the refused request itself
    finally:
        server.should_exit = True
        thread.join(30)
