"""What an event becomes on the wire (webhook body, MQTT events topic): pure functions, one shape for both.

The event itself is the recorder's dict (it must hold "id" and "class_name"; everything else is passed
through). Next to it go the absolute URLs of its snapshot and crop: links(event id), which the web side makes
(it spells the routes) from the server's public base URL: --public-url when given (a reverse proxy, a DNS
name), else the first LAN address the server listens on.
Those URLs are behind the server's access control like every route: a receiver fetches them with the token
or password (or asks for the JPEG inline with --webhook-snapshot).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

OPENED, CLOSED = "opened", "closed"
EventLinks = Callable[[object], dict[str, str]]  # event id -> {"snapshot_url": ..., "crop_url": ...}, absolute


def public_base_url(public_url: str, lan_urls: list[str]) -> str:
    """Return the base that snapshot URLs start with: public_url if set, else the first LAN URL."""
    chosen = public_url.strip() or (lan_urls[0] if lan_urls else "")
    return chosen.rstrip("/")


def check_event(event: dict) -> None:
    """Raise ValueError unless the event has what every output relies on."""
    missing = [key for key in ("id", "class_name") if key not in event]
    if missing:
        raise ValueError(f"an event for the outputs needs {', '.join(missing)}: got keys {sorted(event)}")


def event_message(kind: str, event: dict, links: EventLinks, snapshot_jpeg: bytes | None = None,
                  inline_snapshot: bool = False, now: float | None = None) -> dict:
    """Return the JSON-ready message for an event that opened or closed."""
    message = {
        "type": kind,
        "event": event,
        **links(event["id"]),
        "sent_at": round(time.time() if now is None else now, 3),
    }
    if inline_snapshot and snapshot_jpeg:
        message["snapshot_jpeg_base64"] = base64.b64encode(snapshot_jpeg).decode("ascii")
    return message
