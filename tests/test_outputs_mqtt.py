"""The MQTT output against Debian's mosquitto: events, state, counts and the snapshot arrive; Home Assistant's
discovery configs are valid; the last will says offline when the client dies; a broker that is down at start,
or killed and restarted mid-run, blocks nothing, loses nothing beyond the bounded queue, and gets everything
again (retained) when it is back."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading

import pytest

from harness.client import free_port
from harness.waiting import wait_for
from server.config import REPO_ROOT, Config
from server.outputs import build_outputs
from server.outputs.discovery import Topics
from server.outputs.mqtt import MqttOutput, parse_broker_url
from server.web.events_routes import event_links
from tests.support.outputs_parts import Mosquitto, Subscriber, ha_discovery_problems

BASE = "http://192.168.1.20:5000"
LINKS = event_links(BASE)
JPEG_1 = b"\xff\xd8\xff\xe0first\xff\xd9"
JPEG_2 = b"\xff\xd8\xff\xe0second\xff\xd9"
PREFIX = "edge_test"


def event(event_id: int, class_name: str = "circle") -> dict:
    return {"id": event_id, "class_name": class_name, "class_id": 1, "score": 0.8}


@pytest.fixture
def broker(tmp_path):
    mosquitto = Mosquitto(tmp_path)
    mosquitto.start()
    yield mosquitto
    mosquitto.kill()


@pytest.fixture
def subscribers():
    made = []

    def make(port: int) -> Subscriber:
        made.append(Subscriber(port))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.close()


@pytest.fixture
def make_output():
    made = []

    def make(url: str, discovery: str = "homeassistant", capacity: int = 20) -> MqttOutput:
        output = MqttOutput(url, LINKS, topics=Topics(PREFIX, discovery), capacity=capacity,
                            reconnect_min=0.1, reconnect_max=0.5)
        output.start()
        made.append(output)
        return output

    yield make
    for output in made:
        output.stop()


def connected(output: MqttOutput, times: int = 1) -> bool:
    return wait_for(lambda: output.connections >= times and output.state == "connected")


def test_events_state_counts_and_snapshot_arrive(broker, subscribers, make_output):
    watch = subscribers(broker.port)
    output = make_output(broker.url)
    assert connected(output)
    topics = output.topics
    output.classes(["circle", "square"])
    output.event("opened", event(1), JPEG_1)
    output.counts({"circle": 2})
    assert wait_for(lambda: watch.on(topics.events) and watch.last(topics.snapshot))
    opened = watch.on(topics.events)[0].json()
    assert opened["type"] == "opened" and opened["event"] == event(1)
    assert opened["snapshot_url"] == f"{BASE}/api/events/1/snapshot.jpg"
    assert wait_for(lambda: watch.payload(topics.count("circle")) == b"2")
    assert watch.last(topics.state("circle")).payload == b"ON"
    assert watch.last(topics.state("square")).payload == b"OFF"
    assert watch.last(topics.count("square")).payload == b"0"
    assert json.loads(watch.last(topics.counts).payload) == {"circle": 2}
    assert watch.last(topics.snapshot).payload == JPEG_1

    output.event("closed", event(1), JPEG_2)
    assert wait_for(lambda: len(watch.on(topics.events)) == 2)
    assert watch.last(topics.state("circle")).payload == b"OFF"
    assert watch.last(topics.snapshot).payload == JPEG_2
    assert wait_for(lambda: output.counters.sent == 2)  # the broker acknowledged both (QoS 1)

    # What a newcomer (Home Assistant starting later) gets: the retained state, not old events.
    late = subscribers(broker.port)
    assert wait_for(lambda: late.last(topics.snapshot) is not None)
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert retained[topics.availability] == b"online"
    assert retained[topics.state("circle")] == b"OFF" and retained[topics.count("circle")] == b"2"
    assert retained[topics.snapshot] == JPEG_2
    assert topics.events not in late.topics()


def test_a_class_stays_on_while_any_of_its_events_is_open(broker, subscribers, make_output):
    watch = subscribers(broker.port)
    output = make_output(broker.url)
    assert connected(output)
    state = output.topics.state("person")
    for count, (kind, event_id) in enumerate([("opened", 1), ("opened", 2), ("closed", 1)], start=1):
        output.event(kind, event(event_id, "person"), None)
        assert wait_for(lambda: len(watch.on(output.topics.events)) == count)
    assert watch.last(state).payload == b"ON"
    output.event("closed", event(2, "person"), None)
    assert wait_for(lambda: watch.last(state).payload == b"OFF")


def test_home_assistant_discovery_configs_are_valid(broker, subscribers, make_output):
    watch = subscribers(broker.port)
    output = make_output(broker.url)
    assert connected(output)
    output.classes(["person", "traffic light"])
    output.event("opened", event(1, "person"), JPEG_1)
    configs = lambda: {m.topic: m for m in watch.messages if m.topic.startswith("homeassistant/")}  # noqa: E731
    assert wait_for(lambda: len(configs()) == 5)  # camera + (binary_sensor + sensor) x 2 classes
    payloads = {topic: message.json() for topic, message in configs().items()}
    for topic, payload in payloads.items():
        assert ha_discovery_problems("homeassistant", topic, payload) == [], topic
        assert payload["availability_topic"] == output.topics.availability
    assert len({p["unique_id"] for p in payloads.values()}) == 5
    assert len({json.dumps(p["device"], sort_keys=True) for p in payloads.values()}) == 1  # one device
    by_component = {topic.split("/")[1]: p for topic, p in payloads.items()}
    light = payloads[f"homeassistant/binary_sensor/{PREFIX}/traffic_light_detected/config"]
    assert light["device_class"] == "occupancy" and light["state_topic"] == f"{PREFIX}/traffic_light/state"
    # The topics the configs name are the ones that carry the values, in the payloads they declare.
    person = payloads[f"homeassistant/binary_sensor/{PREFIX}/person_detected/config"]
    assert wait_for(lambda: watch.last(person["state_topic"]) is not None)
    assert watch.last(person["state_topic"]).payload.decode() == person["payload_on"]
    assert watch.last(by_component["camera"]["topic"]).payload == JPEG_1
    count = payloads[f"homeassistant/sensor/{PREFIX}/person_count/config"]
    assert watch.last(count["state_topic"]).payload == b"0"
    late = subscribers(broker.port)
    assert wait_for(lambda: len([m for m in late.messages if m.topic.startswith("homeassistant/")]) == 5)
    assert all(m.retain for m in late.messages if m.topic.startswith("homeassistant/"))  # configs are retained


def test_discovery_is_sent_again_when_home_assistant_restarts(broker, subscribers, make_output):
    watch = subscribers(broker.port)
    output = make_output(broker.url)
    assert connected(output)
    camera = output.topics.config("camera", "snapshot")
    assert wait_for(lambda: len(watch.on(camera)) == 1)
    watch.client.publish("homeassistant/status", "online")
    assert wait_for(lambda: len(watch.on(camera)) == 2)


def test_discovery_off_publishes_no_configs(broker, subscribers, make_output):
    watch = subscribers(broker.port)
    output = make_output(broker.url, discovery="")
    assert connected(output)
    output.event("opened", event(1), JPEG_1)
    assert wait_for(lambda: watch.on(output.topics.events))
    assert not [topic for topic in watch.topics() if topic.startswith("homeassistant")]


LWT_CLIENT = """
import sys, time
from server.outputs.discovery import Topics
from server.outputs.mqtt import MqttOutput
output = MqttOutput(sys.argv[1], lambda event_id: {}, topics=Topics(sys.argv[2], ""), capacity=5, keepalive=60)
output.start()
time.sleep(600)
"""


def test_last_will_says_offline_when_the_client_dies(broker, subscribers):
    watch = subscribers(broker.port)
    availability = Topics(PREFIX, "").availability
    child = subprocess.Popen([sys.executable, "-c", LWT_CLIENT, broker.url, PREFIX], cwd=REPO_ROOT)
    try:
        assert wait_for(lambda: watch.payload(availability) == b"online", 60)
        child.kill()  # SIGKILL: no goodbye, no DISCONNECT packet
        child.wait(10)
        assert wait_for(lambda: watch.last(availability).payload == b"offline")
    finally:
        child.kill()
    late = subscribers(broker.port)
    assert wait_for(lambda: late.last(availability) is not None)
    assert late.last(availability).payload == b"offline" and late.last(availability).retain


def test_a_clean_stop_says_offline_too(broker, subscribers, make_output):
    output = make_output(broker.url)
    assert connected(output)
    output.stop()
    late = subscribers(broker.port)
    assert wait_for(lambda: late.last(output.topics.availability) is not None)
    assert late.last(output.topics.availability).payload == b"offline"


def test_broker_down_at_start_blocks_nothing_and_the_queue_stays_bounded(tmp_path, subscribers, make_output):
    broker = Mosquitto(tmp_path)  # configured, not started: its port refuses connections
    output = make_output(broker.url, capacity=8)
    assert wait_for(lambda: output.last_error == "cannot reach the broker")
    burst = threading.Thread(target=lambda: [output.event("opened", event(i), JPEG_1) for i in range(300)])
    burst.start()
    burst.join(60)
    assert not burst.is_alive() and output.queue.offered == 300
    assert len(output.queue) == 8 and output.counters.dropped == 292 and output.counters.sent == 0
    assert output.status()["state"] == "connecting"
    wakeups, failures = output.wakeups, output.connect_failures
    assert wait_for(lambda: output.connect_failures >= failures + 2)  # a few reconnect attempts go by
    assert output.wakeups - wakeups <= 10  # the worker sleeps meanwhile instead of spinning on the queue
    broker.start()
    try:
        watch = subscribers(broker.port)
        assert connected(output)
        assert wait_for(lambda: output.counters.sent == 8)
        assert len(output.queue) == 0 and output.counters.dropped == 292
        assert wait_for(lambda: watch.last(output.topics.state("circle")) is not None)
        assert watch.last(output.topics.state("circle")).payload == b"ON"  # 300 open events, none closed
        watch.close()
    finally:
        broker.kill()


def test_broker_killed_and_restarted_mid_run(broker, subscribers, make_output):
    output = make_output(broker.url)
    assert connected(output)
    output.classes(["circle"])
    output.event("opened", event(1), JPEG_1)
    assert wait_for(lambda: output.counters.sent == 1)

    broker.kill()
    assert wait_for(lambda: output.state == "reconnecting")
    for event_id in (2, 3, 4):  # while the broker is away: queued, not lost, not blocking
        output.event("opened", event(event_id), JPEG_2)
    assert len(output.queue) == 3 and output.counters.sent == 1 and output.counters.dropped == 0

    broker.start()  # same port, and it remembers nothing (no persistence)
    assert connected(output, times=2)
    assert wait_for(lambda: output.counters.sent == 4)
    watch = subscribers(broker.port)
    topics = output.topics
    assert wait_for(lambda: watch.last(topics.snapshot) is not None and watch.last(topics.availability))
    retained = {m.topic: m.payload for m in watch.messages if m.retain}
    assert retained[topics.availability] == b"online"
    assert retained[topics.state("circle")] == b"ON" and retained[topics.snapshot] == JPEG_2
    assert topics.config("binary_sensor", "circle_detected") in retained
    output.event("closed", event(1), None)
    assert wait_for(lambda: [m.json()["event"]["id"] for m in watch.on(topics.events)] == [1])


def test_credentials_are_used_but_never_shown(tmp_path, subscribers, caplog):
    caplog.set_level(logging.DEBUG)
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "pa55word"], check=True)
    passwords.chmod(0o600)
    broker = Mosquitto(tmp_path, password_file=passwords)
    broker.start()
    good = build_outputs(Config(mqtt_url=f"mqtt://edge:pa55word@127.0.0.1:{broker.port}", mqtt_prefix=PREFIX), LINKS)
    bad = build_outputs(Config(mqtt_url=f"mqtt://edge:wrong-pw@127.0.0.1:{broker.port}", mqtt_prefix="bad"), LINKS)
    good.start(), bad.start()
    try:
        assert wait_for(lambda: good.status()[0]["state"] == "connected")
        assert wait_for(lambda: bad.status()[0]["state"] == "refused")
        assert "authori" in bad.status()[0]["last_error"].lower()
        shown = repr(good.status()) + repr(bad.status()) + caplog.text + repr(good.outputs[0].broker)
        assert "pa55word" not in shown and "wrong-pw" not in shown
        assert good.status()[0]["target"] == f"mqtt://edge:***@127.0.0.1:{broker.port}"
    finally:
        good.stop(), bad.stop()
        broker.kill()


@pytest.mark.parametrize("url", ["http://host", "mqtt://", "host:1883", "mqtt://h:99999", "tcp://h"])
def test_bad_broker_urls_are_refused_with_the_form_to_use(url):
    with pytest.raises(ValueError, match="mqtt://"):
        parse_broker_url(url)


def test_broker_url_forms():
    assert parse_broker_url("mqtt://h").port == 1883 and not parse_broker_url("mqtt://h").tls
    secure = parse_broker_url("mqtts://u:p%40ss@h")
    assert (secure.port, secure.tls, secure.username, secure.password) == (8883, True, "u", "p@ss")
    assert "p%40ss" not in secure.label and "p@ss" not in repr(secure)


@pytest.mark.parametrize("prefix", ["a/+/b", "#", "", "a//b"])
def test_bad_topic_prefixes_are_refused(prefix):
    with pytest.raises(ValueError, match="topic prefix"):
        build_outputs(Config(mqtt_url=f"mqtt://127.0.0.1:{free_port()}", mqtt_prefix=prefix), LINKS)
