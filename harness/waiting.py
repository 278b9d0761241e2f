"""Polling helper for tests that watch a live server or browser."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1) -> bool:
    """Return True as soon as predicate() holds, False if it never does within timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def status_when(client, predicate, timeout: float = 600.0) -> dict:
    """Poll a Flask test client's /api/status until predicate(status) holds and return it; fail showing the last."""
    deadline, status = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        status = client.get("/api/status").get_json()
        if predicate(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"status never matched: {status}")
