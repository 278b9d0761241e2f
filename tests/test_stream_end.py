"""Whatever ends a stream, the outputs hear that nothing is tracked any more; shutdown tells them last.

A real mosquitto and a real webhook receiver; the demo streaming on a real server. After Stop, after a video's
end with loop off and after SIGTERM to run.py, a subscriber that connects only then reads every class OFF and
counted 0 (retained), and every event the webhook heard open it also heard close.
"""

from __future__ import annotations

import re
import signal

import requests

from harness.client import upload
from harness.server_process import ServerProcess
from harness.waiting import wait_for
from server.demo import DEMO_ONNX
from server.demo.video import write_demo_video
from server.outputs.discovery import OFF, ON
from tests.support.helpers import config_for, serving, upload_model_at_320
from tests.support.outputs_parts import Mosquitto, Receiver, Subscriber

PREFIX = "edge_end"
SERVER_CLIENT_DISCONNECTED = re.compile(rf"Client {PREFIX}-[0-9a-f]+ disconnected\.")
DEMO_CLASSES = ("circle", "square", "triangle")
SHORT_VIDEO_S = 6  # the demo's shapes are on screen from its first seconds; loop off, it ends soon


def tracking(watch: Subscriber, since: int = 0) -> bool:
    """Something was reported tracked (a class ON or counted above 0) in the messages from index since on."""
    with watch.lock:
        messages = watch.messages[since:]
    states = {f"{PREFIX}/{name}/state" for name in DEMO_CLASSES}
    counts = {f"{PREFIX}/{name}/count" for name in DEMO_CLASSES}
    return any((m.topic in states and m.payload == ON.encode()) or (m.topic in counts and m.payload != b"0")
               for m in messages)


def nothing_tracked(watch: Subscriber) -> bool:
    """Every class OFF and 0, and the per-class counts empty, as the broker retains them."""
    return (all(watch.payload(f"{PREFIX}/{name}/state") == OFF.encode()
                and watch.payload(f"{PREFIX}/{name}/count") == b"0" for name in DEMO_CLASSES)
            and watch.payload(f"{PREFIX}/counts") == b"{}")


def retained_after(broker: Mosquitto) -> Subscriber:
    """A subscriber connecting now, as Home Assistant after a restart: it reads only what the broker retained."""
    late = Subscriber(broker.port)
    assert wait_for(lambda: late.payload(f"{PREFIX}/counts") is not None, timeout=10), sorted(late.topics())
    return late


def stream_short_demo(base: str, folder) -> None:
    """Upload a short demo video and the demo model over HTTP and stream them at 320, looping."""
    video = write_demo_video(folder / "short.mp4", seconds=SHORT_VIDEO_S)
    assert upload(base, "/upload/video", video).status_code == 201
    upload_model_at_320(base, DEMO_ONNX)
    assert requests.post(base + "/stream/start", timeout=15).status_code == 200


def opened_and_closed(receiver: Receiver) -> tuple[set, set]:
    opened = {b["event"]["id"] for b in receiver.bodies if b["type"] == "opened"}
    closed = {b["event"]["id"] for b in receiver.bodies if b["type"] == "closed"}
    return opened, closed


def test_stop_and_a_videos_end_leave_every_class_off_and_zero(tmp_path):
    broker = Mosquitto(tmp_path)
    broker.start()
    receiver = Receiver()
    watch = Subscriber(broker.port)
    late = None
    try:
        config = config_for(tmp_path, mqtt_url=broker.url, mqtt_prefix=PREFIX, webhook_url=receiver.url,
                            engine="onnxruntime")
        with serving(config) as live:
            stream_short_demo(live.url, tmp_path)
            assert wait_for(lambda: tracking(watch) and receiver.bodies, timeout=180), sorted(watch.topics())
            assert requests.post(live.url + "/stream/stop", timeout=15).status_code == 200

            late = retained_after(broker)
            assert wait_for(lambda: nothing_tracked(late), timeout=10), [(m.topic, m.payload) for m in late.messages]
            assert requests.get(live.url + "/api/status", timeout=10).json()["events"]["open"] == 0
            assert wait_for(lambda: opened_and_closed(receiver)[0] <= opened_and_closed(receiver)[1], timeout=30)
            late.close()

            # The video's own end (loop off, unpaced) is the same end.
            changes = {"loop": False, "realtime": False}
            assert requests.post(live.url + "/api/settings", json=changes, timeout=10).status_code == 200
            before = len(watch.messages)
            assert requests.post(live.url + "/stream/start", timeout=15).status_code == 200
            assert wait_for(lambda: not requests.get(live.url + "/api/status", timeout=10).json()["streaming"],
                            timeout=300)
            assert tracking(watch, since=before)  # it was tracking objects when the video ended
            late = retained_after(broker)
            assert wait_for(lambda: nothing_tracked(late), timeout=10), [(m.topic, m.payload) for m in late.messages]
    finally:
        for subscriber in (watch, late):
            if subscriber is not None:
                subscriber.close()
        broker.kill()
        receiver.close()


def test_sigterm_sends_off_zero_and_offline_and_exits_in_time(tmp_path):
    broker = Mosquitto(tmp_path)
    broker.start()
    watch = Subscriber(broker.port)
    late = None
    server = ServerProcess(tmp_path / "up", "--engine", "onnxruntime", "--mqtt-url", broker.url,
                           "--mqtt-prefix", PREFIX, log_path=tmp_path / "server.log")
    try:
        stream_short_demo(server.url, tmp_path)
        assert wait_for(lambda: tracking(watch), timeout=180), server.log()
        assert server.stop(signal.SIGTERM, timeout=30) == 0, server.log()  # raises, with the stacks, past 30 s
        late = retained_after(broker)
        assert wait_for(lambda: nothing_tracked(late), timeout=10), [(m.topic, m.payload) for m in late.messages]
        assert late.payload(f"{PREFIX}/availability") == b"offline"
        # "offline" is the server's own goodbye, not the broker's last will (sent only for a connection that
        # dies without a DISCONNECT): the broker logged a clean disconnect of the server's client.
        assert wait_for(lambda: SERVER_CLIENT_DISCONNECTED.search(broker.log.read_text()), timeout=10), \
            broker.log.read_text()[-2000:]
    finally:
        server.close()
        for subscriber in (watch, late):
            if subscriber is not None:
                subscriber.close()
        broker.kill()
