"""The Export card in a real browser: Export, progress, a preview that Chromium plays, downloads; free space shown."""

from __future__ import annotations

import csv
import io

import requests
from playwright.sync_api import expect

from harness.waiting import wait_for
from tests.support.browser_fixtures import DESKTOP, PHONE, api_status, screenshot

FRAMES, FPS = 45, 15


def test_export_button_plays_and_downloads_the_result(live_server, tabs, make_video, demo_onnx, tmp_path):
    page = tabs(**DESKTOP)
    page.goto(live_server.url)
    page.set_input_files("#video-input", str(make_video("walk.mp4", width=320, height=240, fps=FPS, frames=FRAMES)))
    expect(page.locator("#video-info")).to_be_visible(timeout=30_000)
    page.set_input_files("#model-input", str(demo_onnx))
    expect(page.locator("#model-info")).to_be_visible(timeout=60_000)
    page.select_option("#setting-imgsz", "320")
    assert wait_for(lambda: api_status(live_server)["settings"]["imgsz"] == 320)
    expect(page.locator("#storage-line")).to_contain_text("Free space", timeout=15_000)

    page.click("#export-btn")
    expect(page.locator("#export-text")).to_contain_text("Done", timeout=300_000)
    expect(page.locator("#export-text")).to_contain_text(f"{FRAMES} frames")
    preview = page.locator("#export-video")
    expect(preview).to_be_visible()
    # Chromium itself decodes the file: enough data for the current frame, and the video's own length.
    page.wait_for_function("() => document.getElementById('export-video').readyState >= 2", timeout=30_000)
    duration = page.evaluate("() => document.getElementById('export-video').duration")
    assert abs(duration - FRAMES / FPS) < 0.2, duration
    playing = page.evaluate("""async () => {
        const video = document.getElementById('export-video');
        await video.play();
        await new Promise((done) => setTimeout(done, 500));
        return {time: video.currentTime, error: video.error && video.error.code, width: video.videoWidth};
    }""")
    assert playing["error"] is None and playing["width"] == 320 and playing["time"] > 0, playing
    screenshot(page, "export-done.png")

    with page.expect_download() as video_download:
        page.click("#export-video-link")
    assert video_download.value.suggested_filename == "walk-annotated.webm"
    saved = tmp_path / "got.webm"
    video_download.value.save_as(saved)
    assert saved.read_bytes() == requests.get(live_server.url + "/api/export/video", timeout=30).content

    with page.expect_download() as table_download:
        page.click("#export-detections-link")
    assert table_download.value.suggested_filename == "walk-detections.csv"
    table = tmp_path / "got.csv"
    table_download.value.save_as(table)
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert rows and {int(r["frame"]) for r in rows} <= set(range(FRAMES))


def test_export_refused_while_streaming_says_so_at_phone_width(live_server, tabs, make_video, demo_onnx):
    page = tabs(**PHONE)
    page.goto(live_server.url)
    page.set_input_files("#video-input", str(make_video("walk.mp4", width=320, height=240, frames=30)))
    expect(page.locator("#video-info")).to_be_visible(timeout=30_000)
    page.set_input_files("#model-input", str(demo_onnx))
    expect(page.locator("#model-info")).to_be_visible(timeout=60_000)
    page.click("#start-btn")
    assert wait_for(lambda: api_status(live_server)["streaming"])
    page.click("#export-btn")
    expect(page.locator("#export-error")).to_contain_text("stop the stream first", timeout=10_000)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
