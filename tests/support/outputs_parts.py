"""Real parts for the outputs' tests: Debian's mosquitto on an ephemeral port, a subscriber that records what
arrives, and an HTTP receiver whose answers a test can script (fail N times, hang, go away and come back)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as paho

from harness.client import free_port
from harness.waiting import wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """A real broker process (no persistence: a restart forgets retained messages, as a crashed one may)."""

    def __init__(self, folder: Path, password_file: Path | None = None):
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        # As root, mosquitto would switch to user "mosquitto", who cannot read files under pytest's tmp_path.
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {pwd.getpwuid(os.geteuid()).pw_name}"]
        lines += [f"password_file {password_file}", "allow_anonymous false"] if password_file \
            else ["allow_anonymous true"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        assert wait_for(lambda: port_open(self.port) or self.process.poll() is not None, 20)
        assert self.process.poll() is None, self.log.read_text()
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: the broker dies without a goodbye, as on a crash or power loss."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self):
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """A paho client subscribed to '#' that keeps every message, retained ones included."""

    port: int
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)  # so close() after a broker's death does not wait long
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe("#", qos=1)
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.subscribed.wait(20), "the test subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, topic: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Received | None:
        found = self.on(topic)
        return found[-1] if found else None

    def payload(self, topic: str) -> bytes | None:
        """Return the latest payload seen on topic, or None."""
        found = self.last(topic)
        return found.payload if found else None

    def topics(self) -> set[str]:
        with self.lock:
            return {m.topic for m in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs; `fail_next` answers 503 that many times, `hold` blocks."""

    def __init__(self, port: int = 0):
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.fail_next = 0
        self.answered_503 = 0
        self.hold = threading.Event()
        self.hold.set()  # set: answer at once; clear: every request waits until it is set again
        self.redirect_to: str | None = None
        self.requests = 0  # of any method: a redirected POST may come back as a GET
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                receiver.requests += 1
                self.send_response(200)
                self.end_headers()

            def do_POST(self):
                receiver.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.hold.wait(60)
                if receiver.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", receiver.redirect_to)
                    self.end_headers()
                    return
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    receiver.answered_503 += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/s3cret-path"

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


# Home Assistant's MQTT discovery, as its documentation and homeassistant/components/mqtt/discovery.py put it:
# the config topic's shape, each component's required options, the options it knows, a device that can be
# registered (at least one identifier or connection) and an origin with a name.
HA_TOPIC = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config")
HA_COMMON = {"name", "unique_id", "object_id", "availability_topic", "payload_available", "payload_not_available",
             "availability", "availability_mode", "device", "origin", "icon", "qos", "json_attributes_topic",
             "json_attributes_template", "enabled_by_default", "entity_category", "encoding"}
HA_OPTIONS = {
    "binary_sensor": {"state_topic", "payload_on", "payload_off", "device_class", "value_template", "off_delay",
                      "expire_after", "force_update"},
    "sensor": {"state_topic", "state_class", "unit_of_measurement", "device_class", "value_template",
               "expire_after", "force_update", "suggested_display_precision", "last_reset_value_template"},
    "camera": {"topic", "image_encoding"},
}
HA_REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}, "camera": {"topic"}}
HA_BINARY_DEVICE_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas", "heat",
    "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power", "presence", "problem",
    "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window"}
HA_STATE_CLASSES = {"measurement", "total", "total_increasing", "measurement_angle"}
HA_DEVICE_KEYS = {"identifiers", "connections", "name", "manufacturer", "model", "model_id", "sw_version",
                  "hw_version", "serial_number", "suggested_area", "configuration_url", "via_device"}


def publish_topic_ok(topic) -> bool:
    return isinstance(topic, str) and bool(topic) and not any(c in topic for c in "+#\0")


def ha_discovery_problems(discovery_prefix: str, topic: str, payload: dict) -> list[str]:
    """Return what Home Assistant would reject or ignore in one discovery message (empty: valid)."""
    if not topic.startswith(discovery_prefix + "/"):
        return [f"{topic} is not under {discovery_prefix}/"]
    match = HA_TOPIC.fullmatch(topic[len(discovery_prefix) + 1:])
    if not match:
        return [f"{topic} does not match <component>/[<node_id>/]<object_id>/config"]
    component = match["component"]
    if component not in HA_OPTIONS:
        return [f"component {component} not handled here"]
    problems = [f"{component} needs {key}" for key in HA_REQUIRED[component] - payload.keys()]
    problems += [f"{component}: unknown option {key}" for key in payload.keys() - HA_OPTIONS[component] - HA_COMMON]
    problems += [f"{key} is not a topic one can publish to: {payload[key]!r}"
                 for key in payload if key.endswith("topic") and not publish_topic_ok(payload[key])]
    if not isinstance(payload.get("unique_id"), str) or not payload["unique_id"]:
        problems.append("no unique_id: HA cannot attach the entity to a device or let users edit it")
    device = payload.get("device", {})
    if not (device.get("identifiers") or device.get("connections")):
        problems.append("device has neither identifiers nor connections")
    if not isinstance(device.get("identifiers", []), list):
        problems.append("device identifiers must be a list")
    problems += [f"device: unknown key {key}" for key in device.keys() - HA_DEVICE_KEYS]
    if "origin" in payload and not payload["origin"].get("name"):
        problems.append("origin needs a name")
    if component == "binary_sensor" and payload.get("device_class", "motion") not in HA_BINARY_DEVICE_CLASSES:
        problems.append(f"binary_sensor device_class {payload['device_class']} unknown")
    if component == "sensor" and payload.get("state_class", "measurement") not in HA_STATE_CLASSES:
        problems.append(f"sensor state_class {payload['state_class']} unknown")
    return problems
