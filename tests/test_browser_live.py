"""The page with a live source, in Debian's Chromium: choose an RTSP stream, watch it, lose it, get it back."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from harness.live_servers import rtsp_missing, rtsp_server, write_frames
from tests.support.browser_fixtures import DESKTOP, PHONE, screenshot, wait_for_new_frame
from tests.support.helpers import upload_model_at_320

SOURCE_TIMEOUT_S = 2.0


@pytest.fixture
def server(serve) -> str:
    return serve(source_timeout=SOURCE_TIMEOUT_S).url


@pytest.fixture
def rtsp(tmp_path):
    reason = rtsp_missing()
    if reason:
        pytest.fail(reason)  # the browser tests run in CI, which installs it
    source = rtsp_server(write_frames(tmp_path / "frames")).start()
    yield source
    source.kill()


@pytest.mark.slow
def test_choose_an_rtsp_source_lose_it_and_recover_without_reloading(server, rtsp, tabs, demo_onnx):
    upload_model_at_320(server, demo_onnx)
    page = tabs(**DESKTOP)
    page.goto(server)

    page.fill("#source-url", "rtsp://127.0.0.1:1/nothing-here")
    page.click("#source-btn")
    expect(page.locator("#source-error")).to_contain_text("tried RTSP", timeout=20_000)

    page.fill("#source-url", rtsp.url.replace("rtsp://", "rtsp://cam:hunter2@"))
    page.click("#source-btn")
    state = page.locator("#source-state")
    expect(state).to_have_text("selected", timeout=20_000)
    expect(page.locator("#source-facts")).to_contain_text("cam:***@")
    expect(page.locator("#source-facts")).to_contain_text("640×480")
    assert "hunter2" not in page.content()

    page.click("#start-btn")
    wait_for_new_frame(page)
    expect(state).to_have_text("live", timeout=15_000)
    expect(page.locator("#source-facts")).to_contain_text("lag", timeout=10_000)
    expect(page.locator("#source-facts")).to_contain_text("dropped")
    expect(page.locator("#stat-lag")).to_have_text(re.compile(r"^\d+$"), timeout=10_000)  # the stats panel too
    expect(page.locator("#stat-drops")).to_have_text(re.compile(r"^\d+$"))
    feed = page.locator("#stream").get_attribute("src")
    screenshot(page, "desktop-live-source.png")

    rtsp.kill()
    expect(state).to_contain_text("reconnecting (attempt", timeout=(SOURCE_TIMEOUT_S + 10) * 1000)
    screenshot(page, "desktop-live-reconnecting.png")

    rtsp.start()
    expect(state).to_have_text("live", timeout=15_000)
    wait_for_new_frame(page)
    assert page.locator("#stream").get_attribute("src") == feed, "the page had to reconnect the stream"
    page.click("#stop-btn")
    expect(state).to_have_text("ended", timeout=10_000)


@pytest.mark.slow
def test_the_source_input_fits_a_phone(server, rtsp, tabs, demo_onnx):
    upload_model_at_320(server, demo_onnx)
    page = tabs(**PHONE)
    page.goto(server)
    page.fill("#source-url", rtsp.url)
    page.click("#source-btn")
    expect(page.locator("#source-state")).to_have_text("selected", timeout=20_000)
    page.click("#start-btn")
    expect(page.locator("#source-state")).to_have_text("live", timeout=20_000)
    expect(page.locator("#source-facts")).to_contain_text("dropped", timeout=10_000)
    for selector in ("#source-url", "#source-btn", "#source-info"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    screenshot(page, "phone-live-source.png")
