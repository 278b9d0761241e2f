"""The page in a real browser (Debian Chromium via Playwright) against a live waitress server."""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from harness.client import upload
from harness.waiting import wait_for
from server.web.demo import start_demo
from server.web.lan import lan_urls
from tests.support.browser_fixtures import (
    ARTIFACTS,
    DESKTOP,
    PHONE,
    api_status,
    screenshot,
    wait_for_new_frame,
)

EMPTY_TEXT = "Upload a video and a YOLOv8 model, then press Start"
RESET_REASON = "Stop the stream first: reset deletes the uploaded files"
CONVERT_TIMEOUT_MS = 180_000


def stat(page: Page, name: str) -> int:
    """Return the number a live-stats tile shows."""
    return int(page.locator(f"#stat-{name}").inner_text())


def stored_files(uploads: Path) -> list[str]:
    """Return the names of every file kept in the uploads folder (temporary ones too)."""
    return sorted(p.name for p in uploads.rglob("*") if p.is_file() and p.name != ".gitkeep")


def upload_both(page: Page, video: Path, model: Path) -> None:
    """Upload a video and a model through the page's file inputs and wait until both are described."""
    page.set_input_files("#video-input", str(video))
    expect(page.locator("#video-info")).to_be_visible(timeout=30_000)
    page.set_input_files("#model-input", str(model))
    expect(page.locator("#model-info")).to_be_visible(timeout=CONVERT_TIMEOUT_MS)


def test_upload_stream_tune_and_reset(live_server, tabs, make_video, demo_pt):
    page = tabs(**DESKTOP)
    page.goto(live_server.url)

    expect(page.locator("#stream-placeholder")).to_contain_text(EMPTY_TEXT)
    expect(page.locator("#start-btn")).to_be_disabled()
    expect(page.locator("#lan-urls a")).to_have_text(lan_urls("127.0.0.1", urlparse(live_server.url).port))
    expect(page.locator("#demo-banner")).to_be_hidden()
    screenshot(page, "desktop-empty.png")

    page.set_input_files("#video-input", str(make_video("street.mp4", width=640, height=360, fps=15, frames=60)))
    video_info = page.locator("#video-info")
    expect(video_info).to_contain_text("640×360", timeout=30_000)
    expect(video_info).to_contain_text("15 fps")
    expect(video_info).to_contain_text("0:04")
    expect(video_info).to_contain_text("MB")

    page.set_input_files("#model-input", str(demo_pt))
    expect(page.locator("#model-progress")).to_contain_text("Converting to ONNX", timeout=30_000)
    model_info = page.locator("#model-info")
    expect(model_info).to_contain_text("5 classes", timeout=CONVERT_TIMEOUT_MS)
    expect(model_info).to_contain_text("YOLOv8")
    expect(page.locator("#model-progress")).to_be_hidden()

    # A small input keeps the random-init model quick on a shared CI core.
    page.select_option("#setting-imgsz", "320")
    assert wait_for(lambda: api_status(live_server)["settings"]["imgsz"] == 320)

    page.click("#start-btn")
    stream = page.locator("#stream")
    expect(stream).to_be_visible()
    assert "/video_feed" in stream.get_attribute("src")
    expect(page.locator("#status-pill")).to_have_text("Streaming")
    wait_for_new_frame(page)
    assert page.evaluate("() => document.getElementById('stream').naturalWidth") == 640
    aspect = page.evaluate("() => getComputedStyle(document.getElementById('stream-frame')).aspectRatio")
    assert aspect.replace(" ", "") == "640/360"

    frames_before = stat(page, "frames")
    page.wait_for_function(
        "(n) => Number(document.getElementById('stat-frames').textContent) > n", arg=frames_before, timeout=30_000
    )
    expect(page.locator("#stat-viewers")).to_have_text("1")
    expect(page.locator("#latency-total")).not_to_have_text("–")
    expect(page.locator("#latency-legend")).to_contain_text("inference")

    # Confidence moves with the slider while the stream keeps going.
    page.locator("#setting-conf").fill("0.6")
    expect(page.locator("#value-conf")).to_have_text("0.60")
    assert wait_for(lambda: api_status(live_server)["settings"]["conf"] == pytest.approx(0.6))
    assert api_status(live_server)["streaming"] is True
    wait_for_new_frame(page)

    reset = page.locator("#reset-btn")
    expect(reset).to_be_disabled()
    expect(reset).to_have_attribute("title", RESET_REASON)
    expect(page.locator("#reset-hint")).to_have_text(RESET_REASON)
    expect(page.locator("#video-input")).to_be_disabled()
    screenshot(page, "desktop-streaming.png")

    # A phone joins the same stream while the laptop watches.
    phone = tabs(**PHONE, color_scheme="dark")
    phone.goto(live_server.url)
    wait_for_new_frame(phone)
    expect(page.locator("#stat-viewers")).to_have_text("2", timeout=10_000)
    screenshot(phone, "phone-streaming-dark.png")
    phone.context.close()

    page.click("#stop-btn")
    expect(stream).to_be_hidden()
    assert stream.get_attribute("src") is None
    expect(page.locator("#stream-placeholder")).to_be_visible()
    expect(page.locator("#status-pill")).to_have_text("Ready")
    expect(reset).to_be_enabled()
    assert api_status(live_server)["streaming"] is False

    uploaded = stored_files(live_server.uploads)
    assert "street.mp4" in uploaded
    reset.click()
    dialog = page.locator("#reset-dialog")
    expect(dialog).to_be_visible()
    page.click("#reset-cancel")
    expect(dialog).to_be_hidden()
    assert stored_files(live_server.uploads) == uploaded, "cancel must keep the files"

    reset.click()
    with page.expect_navigation():
        page.click("#reset-confirm")
    expect(page.locator("#stream-placeholder")).to_contain_text(EMPTY_TEXT)
    expect(page.locator("#video-info")).to_be_hidden()
    expect(page.locator("#model-info")).to_be_hidden()
    expect(page.locator("#start-btn")).to_be_disabled()
    status = api_status(live_server)
    assert status["video"] is None and status["model"] is None
    assert stored_files(live_server.uploads) == []


def test_stream_that_reaches_the_end_returns_the_page_to_stopped(live_server, tabs, make_video, demo_onnx):
    page = tabs(**DESKTOP)
    page.goto(live_server.url)
    upload_both(page, make_video("short.avi", width=320, height=240, fps=15, frames=20), demo_onnx)
    page.select_option("#setting-imgsz", "320")
    page.uncheck("#setting-loop")
    assert wait_for(lambda: api_status(live_server)["settings"]["loop"] is False)

    page.click("#start-btn")
    expect(page.locator("#stream")).to_be_visible()
    expect(page.locator("#status-pill")).to_have_text("Ready", timeout=60_000)
    expect(page.locator("#stream")).to_be_hidden()
    assert page.locator("#stream").get_attribute("src") is None
    expect(page.locator("#start-btn")).to_be_enabled()
    expect(page.locator("#reset-btn")).to_be_enabled()
    assert stat(page, "frames") > 0


def test_wrong_files_show_the_servers_message(live_server, tabs, tmp_path):
    not_a_video = tmp_path / "x.mp4"
    not_a_video.write_text("these are words, not frames\n" * 50)
    not_a_model = tmp_path / "random.onnx"
    not_a_model.write_bytes(os.urandom(4096))
    expected = {}
    for kind, path in (("video", not_a_video), ("model", not_a_model)):
        answer = upload(live_server, f"/upload/{kind}", path)
        assert answer.status_code == 400
        expected[kind] = answer.json()["error"]

    for name, options in (("desktop-errors.png", DESKTOP), ("phone-errors.png", PHONE)):
        page = tabs(**options)
        page.goto(live_server.url)
        page.set_input_files("#video-input", str(not_a_video))
        expect(page.locator("#video-error")).to_have_text(expected["video"], timeout=30_000)
        page.set_input_files("#model-input", str(not_a_model))
        expect(page.locator("#model-error")).to_have_text(expected["model"], timeout=30_000)
        expect(page.locator("#video-info")).to_be_hidden()
        expect(page.locator("#model-info")).to_be_hidden()
        expect(page.locator("#start-btn")).to_be_disabled()
        screenshot(page, name)
    assert stored_files(live_server.uploads) == []


def test_dropped_file_is_uploaded_and_a_refused_upload_explained(live_server, tabs):
    page = tabs(**DESKTOP)
    page.goto(live_server.url)
    drop_file = """([zoneId, name, size]) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([new Uint8Array(size)], name, { type: "video/mp4" }));
      document.getElementById(zoneId).dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
    }"""
    page.evaluate(drop_file, ["video-zone", "dropped.mp4", 2048])
    expect(page.locator("#video-error")).to_be_visible(timeout=30_000)
    assert "{" not in page.locator("#video-error").inner_text()

    # Over the limit the server may answer 413 or drop the connection before reading the body.
    live_server.app.config["MAX_VIDEO_BYTES"] = 1024
    page.evaluate(drop_file, ["video-zone", "big.mp4", 4 * 1024 * 1024])
    page.wait_for_function(
        """() => /too large|interrupted/.test(document.getElementById("video-error").textContent)""", timeout=30_000
    )
    assert stored_files(live_server.uploads) == []


def test_demo_plays_on_arrival_and_says_how_to_use_your_own_files(live_server, tabs):
    start_demo(live_server.app.extensions["detection"])
    page = tabs(**DESKTOP)
    page.goto(live_server.url)
    banner = page.locator("#demo-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Demo")
    expect(banner).to_contain_text(".pt")
    # The stream was already running: the page joins it without anyone pressing Start.
    wait_for_new_frame(page)
    expect(page.locator("#model-info")).to_contain_text("5 classes")
    expect(page.locator("#setting-classes")).to_contain_text("circle")
    expect(page.locator("#stop-btn")).to_be_enabled()

    def settings() -> dict:
        return api_status(live_server)["settings"]

    page.locator("#setting-classes").get_by_label("circle").check()
    assert wait_for(lambda: settings()["classes"] == [0])
    expect(page.locator("#value-classes")).to_have_text("1 of 5")
    page.click("#classes-all")
    assert wait_for(lambda: settings()["classes"] is None)
    expect(page.locator("#classes-all")).to_be_hidden()
    page.locator("#setting-detect_every").select_option(label="every 3 frames")
    assert wait_for(lambda: settings()["detect_every"] == 3)
    page.locator("#setting-detect_every").select_option(label="Auto (when things move)")
    page.locator("#setting-interpolate").select_option(label="Interpolate (live: adds delay)")
    assert wait_for(lambda: settings()["detect_every"] == "auto" and settings()["interpolate"] == "always")
    expect(page.locator("#stat-keyframes")).to_contain_text("/frame)")
    expect(page.locator("#stat-added-delay")).to_have_text(re.compile(r"^[1-9][0-9]*$"))  # 2 frame intervals
    assert api_status(live_server)["streaming"] is True
    screenshot(page, "desktop-demo.png")


# The page's parts from top to bottom on a phone: the stream, what a person operates, what it reports, export, reset.
PHONE_ORDER = ("#stream-frame", ".viewer > .controls-row", ".files-card", ".settings-card", ".stats", ".events-card",
               ".export-card", ".lan", ".danger-zone")


def boxes(page: Page, selectors) -> dict[str, dict]:
    """The bounding box of each selector's one element, visible on the page."""
    found = {}
    for selector in selectors:
        element = page.locator(selector)
        expect(element).to_have_count(1)
        found[selector] = element.bounding_box()
        assert found[selector], f"{selector} is not shown"
    return found


def test_a_phone_shows_the_stream_first_then_controls_stats_events_export_reset(live_server, tabs):
    start_demo(live_server.app.extensions["detection"])
    page = tabs(**PHONE)
    page.goto(live_server.url)
    wait_for_new_frame(page)
    placed = boxes(page, PHONE_ORDER)
    tops = [placed[selector]["y"] for selector in PHONE_ORDER]
    order = ", ".join(f"{selector} at {top:.0f}" for selector, top in zip(PHONE_ORDER, tops))
    assert tops == sorted(tops) and len(set(tops)) == len(tops), order
    for selector, box in placed.items():  # one column: each part below the last, none beside another
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["viewport"]["width"], (selector, box)
    for above, below in zip(PHONE_ORDER, PHONE_ORDER[1:]):
        assert placed[above]["y"] + placed[above]["height"] <= placed[below]["y"] + 1, (above, below)
    assert tops[0] < PHONE["viewport"]["height"] / 2  # the stream is on the first screen
    screenshot(page, "phone-order.png")


def test_a_desktop_keeps_the_stream_on_the_left_and_files_to_export_on_the_right(live_server, tabs):
    start_demo(live_server.app.extensions["detection"])
    page = tabs(**DESKTOP)
    page.goto(live_server.url)
    left, right = ("#stream-frame", ".stats", ".events-card", ".lan"), (".files-card", ".settings-card",
                                                                        ".export-card", ".danger-zone")
    placed = boxes(page, (".viewer", ".side") + left + right)
    viewer, side = placed[".viewer"], placed[".side"]
    assert side["x"] >= viewer["x"] + viewer["width"]
    for column, column_parts in ((viewer, left), (side, right)):
        for selector in column_parts:
            box = placed[selector]
            assert column["x"] <= box["x"] and box["x"] + box["width"] <= column["x"] + column["width"], selector
    for column_parts in (left, right):  # each column in the page's own order
        tops = [placed[selector]["y"] for selector in column_parts]
        assert tops == sorted(tops), dict(zip(column_parts, tops))


@pytest.fixture
def auto_server(serve):
    """A live server with the engine on auto (its default) that tunes int8 with a single recipe, to keep it short."""
    return serve(int8_recipes="u8s8-pc-rr", engine="auto").url


def test_auto_times_the_engines_shows_the_table_and_a_row_can_be_forced(auto_server, tabs, make_video, demo_onnx):
    page = tabs(**DESKTOP)
    page.goto(auto_server)
    upload_both(page, make_video("auto.mp4", width=320, height=240, fps=15, frames=30), demo_onnx)
    active = page.locator("#precision-active")
    expect(page.locator("#setting-engine")).to_have_value('"auto"')
    expect(active).to_contain_text("Auto: running ONNX Runtime FP32")

    page.select_option("#setting-imgsz", "320")  # time at a small input: quicker on a shared CI core
    assert wait_for(lambda: requests.get(f"{auto_server}/api/status", timeout=5).json()["settings"]["imgsz"] == 320)
    page.click("#start-btn")
    expect(page.locator("#job")).to_contain_text("Timing the engines on this device", timeout=30_000)
    expect(active).to_contain_text("the engines are being timed")

    picked = page.locator("#timing-table tr.chosen")
    expect(picked).to_have_count(1, timeout=180_000)
    expect(page.locator("#job")).to_be_hidden()
    report = requests.get(f"{auto_server}/api/status", timeout=5).json()["precision"]["timing"]
    rows = page.get_by_test_id("engine-row")
    expect(rows).to_have_count(len(report["rows"]))
    expect(picked).to_have_attribute("data-row", report["auto"]["row"])
    expect(page.locator("#timing-note")).to_have_text(report["note"])
    screenshot(page, "desktop-engines.png")

    # Force NCNN FP16: the settings and what runs follow.
    fp16 = page.locator("#timing-table tr[data-row^='ncnn-fp16']")
    fp16.get_by_test_id("use-row").click()
    assert wait_for(lambda: requests.get(f"{auto_server}/api/status", timeout=5).json()["precision"]["engine"] == "ncnn")
    expect(page.locator("#setting-engine")).to_have_value('"ncnn"', timeout=10_000)
    expect(active).to_contain_text("Running NCNN FP16")
    status = requests.get(f"{auto_server}/api/status", timeout=5).json()
    assert (status["settings"]["engine"], status["settings"]["precision"]) == ("ncnn", "fp16")

    phone = tabs(**PHONE)
    phone.goto(auto_server)
    expect(phone.locator("#timing-table tr.chosen")).to_be_visible(timeout=10_000)
    # The table may scroll inside its box, never the page itself.
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]
    phone.locator("#precision-info").screenshot(path=str(ARTIFACTS / "phone-engines.png"))
