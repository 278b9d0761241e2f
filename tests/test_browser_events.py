"""The events list in a real browser at phone width: events appear with thumbnails while the demo streams."""

from __future__ import annotations

import requests
from playwright.sync_api import expect

from harness.waiting import wait_for
from server.web.demo import start_demo
from tests.support.browser_fixtures import PHONE, screenshot


def stored_events(server) -> list[dict]:
    return requests.get(f"{server.url}/api/events", timeout=5).json()["events"]


def test_events_appear_with_thumbnails_and_filter_by_class_at_390_px(live_server, tabs):
    # The page first, then the stream: the demo records its first events within a second of starting.
    page = tabs(**PHONE)
    page.goto(live_server.url)
    section = page.locator("#events")
    expect(section.get_by_test_id("events-empty")).to_be_visible()
    start_demo(live_server.app.extensions["detection"])
    requests.post(f"{live_server.url}/api/settings", json={"imgsz": 320}, timeout=10)

    assert wait_for(lambda: len({e["class"] for e in stored_events(live_server)}) >= 2, timeout=180)
    items = section.get_by_test_id("event")
    expect(items.first).to_be_visible(timeout=15_000)
    expect(section.get_by_test_id("events-empty")).to_be_hidden()
    thumb = items.first.get_by_test_id("event-thumb")
    expect(thumb).to_be_visible()
    thumb.scroll_into_view_if_needed()  # thumbnails load lazily: on a phone the events come below the stream's stats
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    assert thumb.evaluate("img => img.src").split("?")[0].endswith("/crop.jpg")

    # Usable at 390 px: nothing sticks out sideways, the list and its controls fit the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = section.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    expect(section.get_by_test_id("events-summary")).to_contain_text("stored")

    chosen = stored_events(live_server)[0]["class"]
    section.get_by_test_id("events-class").select_option(chosen)
    expect(items.first).to_be_visible()
    page.wait_for_function(
        "(name) => [...document.querySelectorAll('[data-testid=event-class]')].every(b => b.textContent === name)",
        arg=chosen, timeout=15_000)
    assert set(items.get_by_test_id("event-class").all_inner_texts()) == {chosen}
    section.scroll_into_view_if_needed()
    screenshot(page, "phone-events.png")

    section.get_by_test_id("events-clear").click()
    assert wait_for(lambda: requests.get(f"{live_server.url}/api/status", timeout=5).json()["events"]["count"] <= 1,
                    timeout=10)
