"""Browser fixtures and helpers shared by the browser tests: Debian's Chromium driven by Playwright, never a download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}

# Draw the current MJPEG frame onto a canvas and fingerprint its pixels.
FRAME_SIGNATURE_JS = """() => {
  const img = document.getElementById("stream");
  if (!img.naturalWidth) return null;
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let hash = 2166136261;
  for (let i = 0; i < pixels.length; i += 7) hash = Math.imul(hash ^ pixels[i], 16777619);
  return String(hash >>> 0);
}"""


@pytest.fixture(scope="module")
def browser():
    """Launch Debian's Chromium once for the module (Playwright never downloads a browser here)."""
    if not CHROMIUM.exists() and not os.environ.get("CI"):
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium); "
                    "they run, and fail without it, when CI is set")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageWatch:
    """A browser tab plus the uncaught script errors it raised."""

    def __init__(self, browser: Browser, **context_options):
        self.context = browser.new_context(**context_options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def close(self):
        self.context.close()
        assert self.errors == [], f"the page raised script errors: {self.errors}"


@pytest.fixture
def tabs(browser):
    """Open tabs with tabs(**context_options); each is closed, and checked for script errors, at the end."""
    opened: list[PageWatch] = []

    def open_tab(**context_options) -> Page:
        watch = PageWatch(browser, **(context_options or DESKTOP))
        opened.append(watch)
        return watch.page

    yield open_tab
    for watch in opened:
        watch.close()


def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot under test-artifacts/ for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header would otherwise land mid-page
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def wait_for_new_frame(page: Page, timeout_ms: int = 30_000) -> str:
    """Return the signature of a frame that differs from the one shown now."""
    page.wait_for_function("() => document.getElementById('stream').naturalWidth > 0", timeout=timeout_ms)
    first = page.evaluate(FRAME_SIGNATURE_JS)
    page.wait_for_function(
        f"(first) => {{ const now = ({FRAME_SIGNATURE_JS})(); return now !== null && now !== first; }}",
        arg=first,
        timeout=timeout_ms,
    )
    return page.evaluate(FRAME_SIGNATURE_JS)


def api_status(server) -> dict:
    """Return what the server itself reports, to check the page against."""
    return requests.get(f"{server.url}/api/status", timeout=5).json()
