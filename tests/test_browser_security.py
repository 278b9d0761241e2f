"""The page under its Content-Security-Policy and behind access control, in Debian's Chromium."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect
from harness.client import upload

PASSWORD = "pi-on-the-shelf"


@pytest.fixture
def serve_page(serve):
    """Start a live server; token=True turns token mode on, as when the server listens on the LAN."""

    def start(token: bool = False, **fields):
        live = serve(token=token, http_threads=8, **fields)
        return live.app, live.url

    return start


class Tab:
    """A tab that records CSP violations, console errors and uncaught script errors."""

    def __init__(self, browser):
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))
        self.page.on(
            "console",
            lambda message: self.problems.append(f"console: {message.text}")
            if message.type == "error" or "Content Security Policy" in message.text
            else None,
        )

    def close(self):
        self.context.close()


def test_token_link_signs_in_and_the_page_runs_under_the_csp(browser, serve_page):
    app, url = serve_page(token=True)
    token = app.extensions["access"].token
    tab = Tab(browser)
    page = tab.page
    response = page.goto(f"{url}/?token={token}")
    assert response.ok
    assert page.url == url + "/", "the token must leave the address bar"
    assert "Content-Security-Policy" in {k.title(): v for k, v in response.headers.items()} or \
        "content-security-policy" in response.headers
    expect(page.get_by_test_id("status-pill")).not_to_have_text("Connecting…", timeout=10_000)  # the page's modules ran
    expect(page.locator("#settings select, #settings input").first).to_be_visible(timeout=10_000)
    cookies = tab.context.cookies()
    assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
    assert page.evaluate("() => document.cookie") == "", "the session cookie must be out of scripts' reach"
    page.reload()
    expect(page.get_by_test_id("status-pill")).not_to_have_text("Connecting…", timeout=10_000)
    assert tab.problems == []
    tab.close()


def test_stream_plays_with_the_session_cookie(browser, serve_page, make_video, demo_onnx):
    app, url = serve_page(token=True)
    bearer = {"Authorization": f"Bearer {app.extensions['access'].token}"}  # a script's way in
    for route, path in (("/upload/video", make_video(width=320, height=240)), ("/upload/model", demo_onnx)):
        assert upload(url, route, path, headers=bearer).status_code == 201
    assert requests.post(url + "/api/settings", json={"loop": True}, headers=bearer, timeout=10).status_code == 200
    assert requests.post(url + "/stream/start", headers=bearer, timeout=30).status_code == 200
    tab = Tab(browser)
    tab.page.goto(f"{url}/?token={app.extensions['access'].token}")
    tab.page.wait_for_function("() => document.getElementById('stream').naturalWidth > 0", timeout=20_000)
    assert tab.problems == []
    tab.close()


def test_password_login_page_in_the_browser(browser, serve_page):
    _, url = serve_page(password=PASSWORD)
    tab = Tab(browser)
    page = tab.page
    page.goto(url + "/")
    assert page.url.startswith(url + "/login")
    page.get_by_test_id("login-password").fill("wrong")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_have_text("wrong password")
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("status-pill")).not_to_have_text("Connecting…", timeout=10_000)
    assert page.url == url + "/"
    # The failed attempt logged a 401 document in the console; nothing else may complain.
    assert [p for p in tab.problems if "401" not in p] == []
    tab.close()
