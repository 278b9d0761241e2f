"""The stats panel tells the truth: dashes while idle, the server's stages while streaming, and a trace download."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import expect

from harness.waiting import wait_for
from server.web.demo import start_demo
from tests.support.browser_fixtures import DESKTOP, api_status, screenshot

IDLE_TILES = ("fps", "frames", "detections", "viewers", "latency", "dropped")


def test_stats_show_dashes_while_idle_and_record_trace_downloads_a_trace(live_server, tabs):
    service = live_server.app.extensions["detection"]
    start_demo(service)
    page = tabs(**DESKTOP)
    page.goto(live_server.url)
    expect(page.locator("#status-pill")).to_have_text("Streaming", timeout=30_000)
    expect(page.locator("#stat-latency")).not_to_have_text("–", timeout=30_000)
    expect(page.locator("#stat-dropped")).not_to_have_text("–")
    expect(page.locator("#latency-legend")).to_contain_text("track")
    status = api_status(live_server)
    legend = page.locator("#latency-legend li").all_inner_texts()
    assert [entry.split()[0] for entry in legend] == status["stages"]  # the server's stages, in its order

    # The confidence slider spans what the server accepts, up to its top end.
    low, high = status["options"]["conf"]
    slider = page.locator("#setting-conf")
    assert float(slider.get_attribute("min")) > low and float(slider.get_attribute("max")) == high
    slider.fill(str(high))
    expect(page.locator("#value-conf")).to_have_text(f"{high:.2f}")
    assert wait_for(lambda: api_status(live_server)["settings"]["conf"] == high)

    with page.expect_download(timeout=60_000) as download:
        page.click("#trace-btn")
    trace = json.loads(Path(download.value.path()).read_text())
    expect(page.locator("#trace-hint")).to_contain_text("perfetto")
    stages = {e["name"] for e in trace["traceEvents"] if e.get("ph") == "X"}
    assert {"decode", "inference", "encode"} <= stages
    threads = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert threads == {"frame-source", "stream-detect", "stream-render"}
    screenshot(page, "desktop-trace-recorded.png")

    page.click("#stop-btn")
    expect(page.locator("#status-pill")).not_to_have_text("Streaming", timeout=15_000)
    for tile in IDLE_TILES:
        expect(page.locator(f"#stat-{tile}")).to_have_text("–")
    expect(page.locator("#latency-total")).to_have_text("–")
    expect(page.locator("#trace-btn")).to_be_disabled()
    stats = api_status(live_server)["stats"]
    assert stats["frames"] == 0 and stats["fps"] == 0  # the API, too, forgets a stopped stream
