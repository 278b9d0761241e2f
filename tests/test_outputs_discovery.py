"""Pure parts of the outputs: Home Assistant discovery payloads (checked against HA's schema rules), message
shapes and URLs, per-class counts, and the counts tap on a real stream of the demo video into a real broker."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.waiting import wait_for
from server.demo.shapes import CLASSES
from server.demo.video import write_demo_video
from server.outputs.adapter import CountsTap, class_counts
from server.outputs.discovery import Topics, discovery_messages, removal_messages, slug
from server.outputs.dispatcher import BoundedQueue
from server.outputs.messages import event_message, public_base_url
from server.outputs.mqtt import MqttOutput
from server.vision.pipeline import FramePipeline
from server.vision.processing import Detections
from server.vision.settings import Settings
from server.vision.sources import FileChoice
from server.vision.stream import StreamRunner
from server.vision.tracker import Tracker
from server.web.events_routes import event_links
from tests.support.outputs_parts import Mosquitto, Subscriber, ha_discovery_problems

TOPICS = Topics("edge_detect", "homeassistant")


def test_every_discovery_config_is_valid_for_home_assistant():
    messages = discovery_messages(TOPICS, ["person", "traffic light", "Ünïcode/class+#"], version="1.2")
    assert len(messages) == 1 + 2 * 3
    payloads = {topic: json.loads(body) for topic, body in messages}
    for topic, payload in payloads.items():
        assert ha_discovery_problems("homeassistant", topic, payload) == [], topic
    assert len({p["unique_id"] for p in payloads.values()}) == len(payloads)
    assert {p["device"]["sw_version"] for p in payloads.values()} == {"1.2"}
    odd = payloads["homeassistant/binary_sensor/edge_detect/n_code_class_detected/config"]
    assert odd["state_topic"] == "edge_detect/n_code_class/state" and odd["name"] == "Ünïcode/class+# detected"


def test_the_schema_check_catches_what_home_assistant_would_reject():
    topic, body = discovery_messages(TOPICS, ["person"])[1]
    good = json.loads(body)
    assert ha_discovery_problems("homeassistant", topic, good) == []
    broken = [
        ("homeassistant", topic, {k: v for k, v in good.items() if k != "state_topic"}),
        ("homeassistant", topic, {**good, "device": {"name": "no ids"}}),
        ("homeassistant", topic, {**good, "state_topic": "a/+/b"}),
        ("homeassistant", topic, {**good, "device_class": "person"}),
        ("homeassistant", topic, {**good, "stat_topic": "typo"}),
        ("homeassistant", topic.replace("/edge_detect/", "/edge.detect/"), good),
        ("homeassistant", topic, {k: v for k, v in good.items() if k != "unique_id"}),
    ]
    for prefix, bad_topic, payload in broken:
        assert ha_discovery_problems(prefix, bad_topic, payload), payload


def test_discovery_off_and_removal():
    assert discovery_messages(Topics("edge_detect", ""), ["person"]) == []
    configs = {topic for topic, _ in discovery_messages(TOPICS, ["person"])}
    removals = removal_messages(TOPICS, ["person"])
    assert {topic for topic, _ in removals} == configs - {TOPICS.config("camera", "snapshot")}
    assert {body for _, body in removals} == {""}


@pytest.mark.parametrize("name, expected", [("person", "person"), ("traffic light", "traffic_light"),
                                            ("A/B+#", "a_b"), ("", "unnamed"), ("   ", "unnamed")])
def test_slugs_are_topic_and_id_safe(name, expected):
    assert slug(name) == expected


def test_messages_carry_absolute_urls_from_the_chosen_base():
    assert public_base_url("", ["http://192.168.1.5:5000/", "http://10.0.0.2:5000/"]) == "http://192.168.1.5:5000"
    assert public_base_url("https://cam.example.lan/", ["http://192.168.1.5:5000/"]) == "https://cam.example.lan"
    assert event_links("http://h")("a/b?c")["snapshot_url"] == "http://h/api/events/a%2Fb%3Fc/snapshot.jpg"
    message = event_message("opened", {"id": 3, "class_name": "cat"}, event_links("http://h"), b"jpeg", now=5.0)
    assert message == {"type": "opened", "event": {"id": 3, "class_name": "cat"}, "sent_at": 5.0,
                       "snapshot_url": "http://h/api/events/3/snapshot.jpg", "crop_url": "http://h/api/events/3/crop.jpg"}
    json.dumps(message)


def test_the_bounded_queue_refuses_and_counts_past_its_capacity():
    queue = BoundedQueue(3)
    assert [queue.put(i) for i in range(5)] == [True, True, True, False, False]
    assert queue.counters.dropped == 2 and len(queue) == 3 and queue.offered == 5
    assert [queue.pop() for _ in range(4)] == [0, 1, 2, None]
    with pytest.raises(ValueError):
        BoundedQueue(0)


def test_class_counts_leave_untracked_detections_out():
    names = ["circle", "square"]
    assert class_counts(np.array([0, 0, 1, 7]), None, names) == {"circle": 2, "square": 1, "7": 1}
    assert class_counts(np.array([0, 0, 1]), np.array([4, -1, 9]), names) == {"circle": 1, "square": 1}
    assert class_counts(np.zeros(0, np.int64), None, names) == {}


class Published:
    def __init__(self, class_ids):
        self.detections = Detections(np.zeros((len(class_ids), 4), np.float32), np.ones(len(class_ids), np.float32),
                                     np.array(class_ids, np.int64))


def test_the_counts_tap_reports_changes_at_most_once_per_interval():
    reports = []
    tap = CountsTap(reports.append, ["circle", "square"], interval=0.5)
    for at, ids in [(0.0, [0]), (0.1, [0, 0]), (0.2, [0, 0]), (0.6, [0, 0]), (0.7, [0, 0]), (1.2, [1])]:
        tap(None, Published(ids), at)
    assert reports == [{"circle": 1}, {"circle": 2}, {"square": 1}]


def test_counts_from_a_real_stream_reach_the_broker(tmp_path, demo_detector):
    """The demo video through the real producer, the tap into a real MQTT output, a real broker."""
    broker = Mosquitto(tmp_path)
    broker.start()
    watch = Subscriber(broker.port)
    output = MqttOutput(broker.url, event_links("http://h"), topics=TOPICS, capacity=10, reconnect_min=0.1, reconnect_max=0.5)
    output.classes(list(CLASSES))
    output.start()
    video = write_demo_video(tmp_path / "demo.mp4", seconds=4)
    pipeline = FramePipeline(lambda settings: demo_detector, list(CLASSES), tracker_factory=Tracker)
    tap = CountsTap(output.counts, list(CLASSES), interval=0.2)
    ended = []
    runner = StreamRunner(FileChoice(video).open, pipeline,
                          lambda: Settings(imgsz=320, realtime=False, loop=False, threads=1), ended.append,
                          on_publish=tap)
    try:
        runner.start()
        assert wait_for(lambda: ended, timeout=120) and ended == [None]
        assert wait_for(lambda: watch.payload(TOPICS.counts) not in (None, b"{}"))
        counts = json.loads(watch.payload(TOPICS.counts))
        assert set(counts) <= set(CLASSES) and sum(counts.values()) > 0
        for name in CLASSES:
            assert wait_for(lambda: watch.payload(TOPICS.count(name)) == str(counts.get(name, 0)).encode())
    finally:
        runner.stop()
        output.stop()
        watch.close()
        broker.kill()
