"""The webhook: each event that opens or closes is POSTed as JSON to one URL, from a worker thread.

Threat: a URL an HTTP client could set would let anyone who reaches the page make the server send requests
into the LAN (request forgery). So the URL comes only from --webhook-url / EDGE_WEBHOOK_URL, only http(s),
and redirects are not followed (a 3xx counts as a failure): the server talks to that one address and no
other. Webhook URLs often carry their secret in the path (Slack, Discord, Home Assistant's webhook ids) or in
user:password@, so logs and status show only scheme, host and port (webhook_label).

Delivery: a timeout per attempt, then up to `retries` more attempts after waits that double from `backoff`
seconds (capped at `backoff_max`); then the message is given up and counted as failed. Messages wait in order
in the bounded queue meanwhile; when it is full new ones are dropped and counted (see dispatcher).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from server.jobs import Worker
from server.outputs.dispatcher import BoundedQueue, Counters
from server.outputs.messages import EventLinks, event_message
from server.redaction import redact

logger = logging.getLogger(__name__)

USER_AGENT = "edge-detect-webhook/1"
IDLE_WAKE_S = 1.0
DRAIN_SHARE = 0.8  # of stop()'s timeout spent posting what is still queued


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse to follow redirects: the configured URL is the only target."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect refused ({code})", headers, fp)


def check_webhook_url(url: str) -> None:
    """Raise ValueError unless url is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--webhook-url must be an http:// or https:// URL with a host, not {webhook_label(url)}")


def webhook_label(url: str) -> str:
    """Return scheme://host:port of url, with any credentials masked and the path (often a secret) hidden."""
    parts = urlsplit(url)
    label = redact(f"{parts.scheme}://{parts.netloc}") if parts.netloc else (parts.scheme or "?") + "://"
    return label + ("/…" if parts.path.strip("/") or parts.query else "")


def backoff_delays(retries: int, backoff: float, backoff_max: float) -> list[float]:
    """Return the waits before each retry: backoff, 2*backoff, 4*backoff ... capped at backoff_max."""
    return [min(backoff * 2 ** attempt, backoff_max) for attempt in range(retries)]


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """Return url without user:password@ and the Basic Authorization header they stand for (if any)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": "Basic " + base64.b64encode(pair).decode()}


class WebhookOutput:
    """POST event messages to one URL from a thread of its own; never blocks the caller."""

    kind = "webhook"

    def __init__(self, url: str, links: EventLinks, *, timeout: float, retries: int, capacity: int,
                 inline_snapshot: bool = False, backoff: float = 1.0, backoff_max: float = 30.0):
        check_webhook_url(url)
        self._url, self._auth_headers = split_credentials(url)
        self.label = webhook_label(url)
        self.links = links
        self.timeout = timeout
        self.delays = backoff_delays(retries, backoff, backoff_max)
        self.inline_snapshot = inline_snapshot
        self.counters = Counters()
        self.queue = BoundedQueue(capacity, self.counters)
        self.attempts = 0  # POSTs tried, retries included
        self.state = "idle"
        self.last_error: str | None = None
        self._opener = urllib.request.build_opener(NoRedirects)
        self._drain_until = 0.0  # set by stop()
        self._worker = Worker("output-webhook", "the webhook output", wake=self.queue.poke)

    # -- what the producer side calls (never blocks) -----------------------------------------------
    def event(self, kind: str, event: dict, snapshot_jpeg: bytes | None) -> None:
        self.queue.put((kind, event, snapshot_jpeg))

    def counts(self, per_class: dict[str, int]) -> None:
        """Counts are not sent by webhook (several a second would flood a receiver)."""

    def classes(self, names: list[str]) -> None:
        """Nothing to announce: a webhook has no discovery."""

    def nothing_tracked(self) -> None:
        """Nothing to send: the open events' closes, queued before this, say it."""

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._worker.start(self._run)
        logger.info("webhook output to %s", self.label)

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (each once, no retries) within most of timeout, then end the worker."""
        self._drain_until = time.monotonic() + DRAIN_SHARE * timeout
        self._worker.stop(timeout)

    def status(self) -> dict:
        return {"kind": self.kind, "target": self.label, "state": self.state, "queued": len(self.queue),
                "attempts": self.attempts, "last_error": self.last_error, **self.counters.as_dict()}

    # -- the worker ----------------------------------------------------------------------------
    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            item = self.queue.pop()
            if item is None:
                self.queue.wait(IDLE_WAKE_S)
                continue
            self._deliver(self._body(item), stop)
        self._drain()
        self.state = "stopped"

    def _drain(self) -> None:
        """Stopping: post what is still queued (a stream's last closes) once each, while the time stop gave lasts."""
        while time.monotonic() < self._drain_until and (item := self.queue.pop()) is not None:
            if self._post(self._body(item)):
                self.counters.add("sent")
            else:
                self.counters.add("failed")

    def _body(self, item: tuple) -> bytes:
        kind, event, snapshot = item
        return json.dumps(event_message(kind, event, self.links, snapshot, self.inline_snapshot)).encode()

    def _deliver(self, body: bytes, stop: threading.Event) -> None:
        """POST body, retrying with backoff; count it sent or failed."""
        for wait in [0.0, *self.delays]:
            if wait and stop.wait(wait):
                return  # stopping: the message is abandoned, not counted as failed
            self.state = "sending" if wait == 0.0 else "retrying"
            if self._post(body):
                self.counters.add("sent")
                self.state, self.last_error = "idle", None
                return
        self.counters.add("failed")
        self.state = "failing"
        logger.warning("webhook to %s: gave up after %d attempts (%s)", self.label, len(self.delays) + 1,
                       self.last_error)

    def _post(self, body: bytes) -> bool:
        self.attempts += 1
        request = urllib.request.Request(self._url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, **self._auth_headers})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(1024)
                return 200 <= response.status < 300
        except urllib.error.HTTPError as error:
            self.last_error = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            self.last_error = type(reason).__name__ if isinstance(reason, BaseException) else str(reason)[:80]
        logger.debug("webhook to %s failed: %s", self.label, self.last_error)
        return False
