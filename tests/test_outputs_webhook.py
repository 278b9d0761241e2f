"""The webhook output against a real HTTP receiver: delivery, retries with backoff, giving up, a receiver that
goes away and comes back, a bounded queue the producer never waits on, and no secret in status or logs."""

from __future__ import annotations

import base64
import logging
import threading

import pytest

from harness.client import free_port
from harness.waiting import wait_for
from server.config import Config
from server.outputs import build_outputs
from server.outputs.webhook import WebhookOutput, backoff_delays, check_webhook_url, webhook_label
from server.web.events_routes import event_links
from tests.support.outputs_parts import Receiver

BASE = "http://192.168.1.20:5000"
LINKS = event_links(BASE)
JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"


def event(event_id=7, class_name="person", **extra) -> dict:
    return {"id": event_id, "class_name": class_name, "class_id": 0, "score": 0.91, **extra}


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def outputs_to_stop():
    started = []
    yield started
    for output in started:
        output.stop()


def webhook(url, outputs_to_stop, **overrides) -> WebhookOutput:
    settings = {"timeout": 10.0, "retries": 3, "capacity": 10, "backoff": 0.01, "backoff_max": 0.05, **overrides}
    output = WebhookOutput(url, LINKS, **settings)
    output.start()
    outputs_to_stop.append(output)
    return output


def test_events_arrive_as_json_with_absolute_snapshot_urls(receiver):
    outputs = build_outputs(Config(webhook_url=receiver.url), LINKS)
    outputs.start()
    try:
        outputs.event_opened(event(), JPEG)
        outputs.event_closed(event(end=12.5), JPEG)
        assert wait_for(lambda: len(receiver.bodies) == 2)
    finally:
        outputs.stop()
    opened, closed = receiver.bodies
    assert [opened["type"], closed["type"]] == ["opened", "closed"]
    assert opened["event"] == event() and closed["event"]["end"] == 12.5
    assert opened["snapshot_url"] == f"{BASE}/api/events/7/snapshot.jpg"
    assert opened["crop_url"] == f"{BASE}/api/events/7/crop.jpg"
    assert "snapshot_jpeg_base64" not in opened  # only with --webhook-snapshot
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert outputs.status()[0] | {"sent": 2, "failed": 0, "dropped": 0} == outputs.status()[0]


def test_snapshot_inline_when_asked(receiver):
    outputs = build_outputs(Config(webhook_url=receiver.url, webhook_snapshot=True), LINKS)
    outputs.start()
    try:
        outputs.event_opened(event(), JPEG)
        assert wait_for(lambda: receiver.bodies)
    finally:
        outputs.stop()
    assert base64.b64decode(receiver.bodies[0]["snapshot_jpeg_base64"]) == JPEG


def test_retries_after_failures_then_delivers(receiver, outputs_to_stop):
    receiver.fail_next = 2
    output = webhook(receiver.url, outputs_to_stop)
    output.event("opened", event(), None)
    assert wait_for(lambda: output.counters.sent == 1)
    assert receiver.answered_503 == 2 and len(receiver.bodies) == 1
    assert output.attempts == 3 and output.counters.failed == 0


def test_gives_up_after_the_retries_and_counts_it(receiver, outputs_to_stop):
    receiver.fail_next = 1000
    output = webhook(receiver.url, outputs_to_stop, retries=2)
    output.event("opened", event(1), None)
    output.event("opened", event(2), None)
    assert wait_for(lambda: output.counters.failed == 2)
    assert receiver.answered_503 == 6  # 1 + 2 retries, for each of the two
    assert output.status()["state"] == "failing" and output.status()["last_error"] == "HTTP 503"
    receiver.fail_next = 0
    output.event("opened", event(3), None)  # giving up on two does not stop the third
    assert wait_for(lambda: output.counters.sent == 1)
    assert [body["event"]["id"] for body in receiver.bodies] == [3]


def test_backoff_doubles_up_to_its_cap():
    assert backoff_delays(5, 1.0, 6.0) == [1.0, 2.0, 4.0, 6.0, 6.0]
    assert backoff_delays(0, 1.0, 6.0) == []


def test_receiver_down_then_back_gets_the_event(outputs_to_stop):
    port = free_port()  # nothing listens here yet: connection refused
    output = webhook(f"http://127.0.0.1:{port}/hook", outputs_to_stop, retries=200, backoff=0.05, backoff_max=0.2)
    output.event("opened", event(), JPEG)
    assert wait_for(lambda: output.attempts >= 3)
    assert output.status()["state"] == "retrying" and "Refused" in output.status()["last_error"]
    assert output.counters.sent == 0
    receiver = Receiver(port)
    try:
        assert wait_for(lambda: output.counters.sent == 1)
        assert [body["event"]["id"] for body in receiver.bodies] == [7]
    finally:
        receiver.close()


def test_producer_never_waits_and_the_queue_stays_bounded(receiver, outputs_to_stop):
    receiver.hold.clear()  # the receiver accepts and then sits on every request
    output = webhook(receiver.url, outputs_to_stop, capacity=5, timeout=120.0)
    output.event("opened", event(0), None)
    assert wait_for(lambda: output.attempts == 1 and len(output.queue) == 0)  # in flight, stuck at the receiver
    burst = threading.Thread(target=lambda: [output.event("opened", event(i), None) for i in range(1, 201)])
    burst.start()
    burst.join(60)
    # All 200 calls returned while the only delivery was still held by the receiver.
    assert not burst.is_alive() and output.queue.offered == 201 and not receiver.hold.is_set()
    assert len(output.queue) == 5 and output.counters.dropped == 195 and receiver.bodies == []
    receiver.hold.set()
    assert wait_for(lambda: output.counters.sent == 6)
    assert [body["event"]["id"] for body in receiver.bodies] == [0, 1, 2, 3, 4, 5]  # in order, oldest first


def test_redirects_are_not_followed(receiver, outputs_to_stop):
    elsewhere = Receiver()
    try:
        receiver.redirect_to = elsewhere.url
        output = webhook(receiver.url, outputs_to_stop, retries=0)
        output.event("opened", event(), None)
        assert wait_for(lambda: output.counters.failed == 1)
        assert elsewhere.requests == 0 and output.status()["last_error"] == "HTTP 302"
    finally:
        elsewhere.close()


def test_stop_interrupts_a_backoff_wait(outputs_to_stop):
    output = webhook(f"http://127.0.0.1:{free_port()}/", outputs_to_stop, retries=5, backoff=3600.0,
                     backoff_max=3600.0)
    output.event("opened", event(), None)
    assert wait_for(lambda: output.attempts == 1 and output.state == "sending")
    output.stop(timeout=30)
    assert not output._worker.running() and output.counters.failed == 0


def test_credentials_are_sent_but_never_shown(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    url = receiver.url.replace("http://", "http://hookuser:hookpass@")
    outputs = build_outputs(Config(webhook_url=url), LINKS)
    outputs.start()
    try:
        outputs.event_opened(event(), None)
        assert wait_for(lambda: receiver.bodies)
    finally:
        outputs.stop()
    expected = "Basic " + base64.b64encode(b"hookuser:hookpass").decode()
    assert receiver.headers[0]["Authorization"] == expected
    shown = repr(outputs.status()) + caplog.text
    assert "hookpass" not in shown and "s3cret-path" not in shown
    assert outputs.status()[0]["target"] == f"http://hookuser:***@127.0.0.1:{receiver.port}/…"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/x", "gopher://h/", "http:///nohost", "hook"])
def test_only_http_urls_are_accepted(url):
    with pytest.raises(ValueError, match="http:// or https://"):
        check_webhook_url(url)


def test_labels_hide_paths_and_passwords():
    assert webhook_label("https://hooks.example/services/T0/B0/XYZ") == "https://hooks.example/…"
    assert webhook_label("http://u:p@h:8123") == "http://u:***@h:8123"
    assert webhook_label("http://token@h/") == "http://***@h"


def test_events_without_an_id_or_class_are_refused_at_the_call():
    outputs = build_outputs(Config(), LINKS)
    assert outputs.outputs == []  # nothing configured: no thread, no output
    with pytest.raises(ValueError, match="class_name"):
        outputs.event_opened({"id": 1})
