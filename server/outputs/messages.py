"""What an event becomes on the wire (webhook body, MQTT events topic): pure functions, one shape for both.

The event itself is the recorder's dict (it must hold "id" and "class_name"; everything else is passed
through). Next to it go the absolute URLs of its snapshot and crop, built from the server's public base URL:
--public-url when given (a reverse proxy, a DNS name), else the first LAN address the server listens on.
Those URLs are behind the server's access control like every route: a receiver fetches them with the token
or password (or asks for the JPEG inline with --webhook-snapshot).
"""

from __future__ import annotations

import base64
import time
from urllib.parse import quote

OPENED, CLOSED = "opened", "closed"


def public_base_url(public_url: str, lan_urls: list[str]) -> str:
    """Return the base that snapshot URLs start with: public_url if set, else the first LAN URL."""
    chosen = public_url.strip() or (lan_urls[0] if lan_urls else "")
    return chosen.rstrip("/")


def event_urls(base_url: str, event_id) -> dict[str, str]:
    """Return the absolute snapshot and crop URLs of an event."""
    root = f"{base_url}/api/events/{quote(str(event_id), safe='')}"
    return {"snapshot_url": f"{root}/snapshot.jpg", "crop_url": f"{root}/crop.jpg"}


def check_event(event: dict) -> None:
    """Raise ValueError unless the event has what every output relies on."""
    missing = [key for key in ("id", "class_name") if key not in event]
    if missing:
        raise ValueError(f"an event for the outputs needs {', '.join(missing)}: got keys {sorted(event)}")


def event_message(kind: str, event: dict, base_url: str, snapshot_jpeg: bytes | None = None,
                  inline_snapshot: bool = False, now: float | None = None) -> dict:
    """Return the JSON-ready message for an event that opened or closed."""
    message = {
        "type": kind,
        "event": event,
        **event_urls(base_url, event["id"]),
        "sent_at": round(time.time() if now is None else now, 3),
    }
    if inline_snapshot and snapshot_jpeg:
        message["snapshot_jpeg_base64"] = base64.b64encode(snapshot_jpeg).decode("ascii")
    return message
