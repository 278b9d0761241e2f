"""What a client does to a running server: upload a file, read /video_feed's JPEGs, find a port nothing listens on."""

from __future__ import annotations

import contextlib
import io
import socket
from pathlib import Path
from typing import Iterator

import requests
from flask.testing import FlaskClient

from server.vision import mjpeg

FEED_CHUNK = 65536


def free_port() -> int:
    """A port nothing listens on now, for a server that cannot be started on port 0 and asked."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def upload(to, route: str, path: Path | None = None, *, name: str | None = None, payload: bytes | None = None,
           session=None, headers: dict | None = None, timeout: float = 120):
    """POST one file (path, or payload bytes under name) as multipart field "file" to route.

    to is a Flask test client, a base URL or anything with a `url` (a live server, a server process); the response
    is the client's own.
    """
    name = name or (path.name if path is not None else "upload.bin")
    with (open(path, "rb") if path is not None else io.BytesIO(payload)) as handle:
        if isinstance(to, FlaskClient):
            return to.post(route, data={"file": (handle, name)}, content_type="multipart/form-data", headers=headers)
        base = to if isinstance(to, str) else to.url
        return (session or requests).post(f"{base}{route}", files={"file": (name, handle)}, headers=headers,
                                          timeout=timeout)


class FeedRefused(RuntimeError):
    """/video_feed answered with something else than a stream (409 not streaming, 503 every slot taken, ...)."""


@contextlib.contextmanager
def video_feed(base: str, timeout: float = 30, session=None) -> Iterator[Iterator[bytes]]:
    """Watch base's /video_feed as a viewer: the block gets its JPEGs as they arrive; leaving it disconnects."""
    with (session or requests).get(f"{base}/video_feed", stream=True, timeout=timeout) as response:
        if response.status_code != 200:
            raise FeedRefused(f"GET /video_feed: HTTP {response.status_code}: {response.text[:300]}")
        yield mjpeg.iter_jpegs(response.iter_content(FEED_CHUNK))
