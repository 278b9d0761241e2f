"""The production WSGI server (waitress), set up for MJPEG viewers and for clients that misbehave.

Threats answered here, below the app (waitress reads a whole request before the app sees it):
- Huge bodies: each route's own limit is applied while the body arrives (a Content-Length over it is
  refused before one body byte is read; a chunked body is cut at the limit), with a JSON 413, so
  nothing is spooled to /tmp beyond the limit.
- A full disk: an upload whose Content-Length does not fit the uploads disk's free space (less the reserve,
  server.storage) is refused with a JSON 507 before one body byte is read or spooled.
- Slowloris (connections that drip headers forever): they cost a socket, not a thread, so the
  connection limit is set well above what a home LAN needs and the file-descriptor limit raised to fit;
  idle connections are closed after channel_timeout.
- Viewers that never read: a viewer whose socket has not taken any data for send_timeout seconds is
  disconnected, which ends its generator and frees its worker thread for someone else.
Waitress' own errors (400, 413, 431, ...) are JSON like the app's.
"""

from __future__ import annotations

import copy
import json
import logging
import resource
import tempfile
import time

from waitress import create_server
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.task import ErrorTask
from waitress.utilities import Error, RequestEntityTooLarge

from server.config import Config
from server.storage import DiskSpace, InsufficientStorage, same_disk
from server.web.guards import SECURITY_HEADERS

logger = logging.getLogger(__name__)

# Waitress buffers up to 16 MB per connection before it makes the app wait; a slow MJPEG viewer would
# then fall minutes behind. With a small buffer the viewer's generator blocks instead, and when it
# resumes it takes the latest frame: slow viewers skip frames rather than queue them.
OUTBUF_HIGH_WATERMARK = 512 * 1024
OUTBUF_OVERFLOW = 2 * OUTBUF_HIGH_WATERMARK  # never spill a connection's buffer to disk
DEFAULT_BODY_LIMIT = 1024 * 1024  # JSON settings, the login form: small
MAX_HEADER_BYTES = 64 * 1024
CLEANUP_INTERVAL_S = 5
FDS_PER_CONNECTION = 2  # the socket and, for an upload in flight, its file
MB = 1024 * 1024


class NoRoomForBody(Error):
    """Waitress' error for an upload the disk has no room for (its message is InsufficientStorage's)."""

    code = 507
    reason = "Insufficient Storage"


class RouteLimitParser(HTTPRequestParser):
    """Apply the route's body limit (body_limits, by path) the moment the request line is known.

    An upload (a path in body_limits) whose Content-Length the uploads disk (space) cannot take is refused
    at the same moment, before waitress spools its body.
    """

    body_limits: dict[str, int] = {}
    space: DiskSpace | None = None

    def parse_header(self, header_plus):
        super().parse_header(header_plus)
        route = self.path.rstrip("/") or "/"
        limit = self.body_limits.get(route, DEFAULT_BODY_LIMIT)
        # Waitress compares Content-Length (before reading) and a chunked body's running total (while
        # reading) with adj.max_request_body_size, refusing at >=; give this request its own copy.
        self.adj = copy.copy(self.adj)
        self.adj.max_request_body_size = limit + 1
        self.body_limit = limit
        if self.space is not None and route in self.body_limits and 0 < self.content_length <= limit:
            try:
                self.space.require(upload_footprint(self.space, self.content_length, self.adj.inbuf_overflow))
            except InsufficientStorage as exc:
                self.error = NoRoomForBody(str(exc))
                self.completed = True


def upload_footprint(space: DiskSpace, content_length: int, inbuf_overflow: int) -> int:
    """Bytes an upload takes on the uploads disk at its peak.

    Waitress spools a body over inbuf_overflow to a file in the system's temporary folder, and the app then
    copies it into the uploads folder: when both folders are on one disk (a Pi's SD card) both copies exist.
    """
    spooled = content_length > inbuf_overflow and same_disk(tempfile.gettempdir(), space.folder)
    return content_length * (2 if spooled else 1)


class JsonErrorTask(ErrorTask):
    """Waitress' own error responses, as JSON like every error of the app."""

    def execute(self):
        error = self.request.error
        if isinstance(error, RequestEntityTooLarge):
            limit = getattr(self.request, "body_limit", DEFAULT_BODY_LIMIT)
            what = "the file" if self.request.path.startswith("/upload/") else "the request body"
            message = f"{what} is too large: the limit is {max(1, limit // MB)} MB"
        elif isinstance(error, NoRoomForBody):
            message = str(error.body)
        else:
            message = f"{error.reason}: {str(error.body)[:200]}"
        body = json.dumps({"error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.response_headers.extend(SECURITY_HEADERS.items())
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


# The waitress release GuardedChannel's override was written for: requirements.txt pins it, and
# tests/test_waitress_pin.py fails when the installed waitress' method differs from the one copied.
WAITRESS_VERSION = "3.0.2"


class GuardedChannel(HTTPChannel):
    """A channel that gives up on a client whose socket takes no data for send_timeout seconds."""

    parser_class = RouteLimitParser
    error_task_class = JsonErrorTask
    send_timeout: float  # from Config, set by make_server

    def _flush_outbufs_below_high_watermark(self):
        # Waitress' version (WAITRESS_VERSION) waits without a deadline, so a viewer that stops reading
        # held a worker thread forever. Same logic, with a deadline. Waitress has no public hook for it.
        if self.total_outbufs_len <= self.adj.outbuf_high_watermark:
            return
        deadline = time.monotonic() + self.send_timeout
        with self.outbuf_lock:
            _, exception = self._flush_exception(self._flush_some, do_close=False)
            if exception:
                self.server.pull_trigger()
                self.outbuf_lock.wait(self.send_timeout)
                return
            while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                if time.monotonic() > deadline:
                    logger.info("dropping %s: it took no data for %.0f s", self.addr[0], self.send_timeout)
                    self.server.pull_trigger(self.handle_close)  # sockets are closed on the main loop
                    raise ClientDisconnected
                self.server.pull_trigger()
                self.outbuf_lock.wait(1.0)


def body_limits(app) -> dict[str, int]:
    return {"/upload/video": app.config["MAX_VIDEO_BYTES"], "/upload/model": app.config["MAX_MODEL_BYTES"]}


def raise_fd_limit(connections: int, threads: int) -> None:
    """Make room for connection_limit sockets (Raspberry Pi OS starts processes at 1024 descriptors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FDS_PER_CONNECTION * connections + threads + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        logger.debug("file descriptor limit %d -> %d", soft, new)


def make_server(app, config: Config):
    """Return a waitress server for app bound to config.host:config.port (0 picks a free port: .effective_port)."""
    raise_fd_limit(config.connection_limit, config.http_threads)
    server = create_server(
        app,
        host=config.host,
        port=config.port,
        threads=config.http_threads,
        ident="edge-detect",
        outbuf_high_watermark=OUTBUF_HIGH_WATERMARK,
        outbuf_overflow=OUTBUF_OVERFLOW,
        connection_limit=config.connection_limit,
        channel_timeout=config.channel_timeout,
        cleanup_interval=CLEANUP_INTERVAL_S,
        max_request_header_size=MAX_HEADER_BYTES,
        asyncore_use_poll=True,  # select() fails past 1024 descriptors
    )
    space = app.extensions["uploads"].space if "uploads" in app.extensions else None
    parser = type("AppRouteLimitParser", (RouteLimitParser,), {"body_limits": body_limits(app), "space": space})
    server.channel_class = type(
        "AppChannel", (GuardedChannel,), {"parser_class": parser, "send_timeout": float(config.send_timeout)}
    )
    if "access" in app.extensions:
        from server.web.auth import set_listen_host

        set_listen_host(app, config.host)
    return server
