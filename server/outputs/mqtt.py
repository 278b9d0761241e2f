"""The MQTT output (paho-mqtt): events, per-class counts, availability with a last will, the latest snapshot,
and Home Assistant discovery, published from threads of its own.

Threat: the broker address and its credentials come only from --mqtt-url / EDGE_MQTT_URL (never from HTTP),
and everything logged or shown uses the label, with the password masked by server.redaction.

Never blocking the producer: the caller only updates a few dicts under a short lock and appends to a bounded
queue (dispatcher.BoundedQueue). paho's loop thread owns the socket: connect_async + loop_start, so a broker
that is down at start-up costs nothing; it retries by itself with reconnect_delay_set's backoff. Our worker
thread publishes: events (QoS 1, in order) only while connected, so while the broker is away they wait in the
bounded queue and new ones beyond its capacity are dropped and counted; retained state (discovery configs,
ON/OFF per class, counts, the snapshot, QoS 0) is coalesced to its latest value and sent again in full on
every (re)connection, because a restarted broker without persistence has forgotten it. The last will marks us
"offline" (retained) when the connection dies without a clean goodbye; stop() says "offline" itself.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho

from server.jobs import Worker
from server.outputs import discovery
from server.outputs.discovery import OFF, OFFLINE, ON, ONLINE, Topics
from server.outputs.dispatcher import BoundedQueue, Counters
from server.outputs.messages import EventLinks, event_message
from server.redaction import redact

logger = logging.getLogger(__name__)

SCHEMES = {"mqtt": (1883, False), "mqtts": (8883, True)}
IDLE_WAKE_S = 1.0
GOODBYE_WAIT_S = 2.0
PAHO_HEADROOM = 8


@dataclass(frozen=True)
class Broker:
    """Where to connect; label is what logs and status show (password masked)."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    label: str

    def __repr__(self) -> str:  # never let the password reach a log through repr()
        return f"Broker({self.label!r})"

    __str__ = __repr__


def parse_broker_url(url: str) -> Broker:
    """Parse mqtt://[user[:password]@]host[:port] (or mqtts:// for TLS); raise ValueError otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ValueError(f"--mqtt-url must look like mqtt://user:password@host:1883 (or mqtts://), "
                         f"not {redact(url)[:80]}")
    default_port, tls = SCHEMES[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError as error:
        raise ValueError(f"--mqtt-url {redact(url)}: {error}") from None
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Broker(parts.hostname, port, tls, username, password, redact(f"{parts.scheme}://{parts.netloc}"))


class MqttOutput:
    """Publish events and state to one broker; every public method returns at once."""

    kind = "mqtt"

    def __init__(self, url: str, links: EventLinks, *, topics: Topics, capacity: int, keepalive: int = 30,
                 reconnect_min: float = 1.0, reconnect_max: float = 30.0, version: str = ""):
        self.broker = parse_broker_url(url)
        self.label = self.broker.label
        self.topics = topics
        self.links = links
        self.version = version
        self.keepalive = keepalive
        self.counters = Counters()
        self.queue = BoundedQueue(capacity, self.counters)
        self.state = "stopped"
        self.last_error: str | None = None
        self.connections = 0  # successful CONNACKs, reconnections included
        self.connect_failures = 0  # attempts that could not reach the broker
        self.wakeups = 0  # worker loop turns: stays small while the broker is away (no spinning)
        self._lock = threading.Lock()  # guards the coalesced state below; held only for dict updates
        self._classes: list[str] = []
        self._open: dict[str, set] = {}  # class -> ids of its open events
        self._counts: dict[str, int] = {}
        self._snapshot: bytes | None = None
        self._dirty: set[str] = set()  # "discovery", "states", "counts", "snapshot"
        self._connected = False
        self._in_flight: list[paho.MQTTMessageInfo] = []  # events handed to paho, not yet acknowledged
        self.client = self._make_client(capacity, reconnect_min, reconnect_max)
        self._worker = Worker("output-mqtt", "the MQTT output", wake=self.queue.poke)

    def _make_client(self, capacity: int, reconnect_min: float, reconnect_max: float) -> paho.Client:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{self.topics.node_id}-{uuid.uuid4().hex[:8]}",
                             protocol=paho.MQTTv311)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set()
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(reconnect_min, reconnect_max)
        # QoS 1 messages paho holds (in flight, or across a disconnection): our queue's events plus the
        # availability messages, so paho's bound never drops an event our queue accepted.
        client.max_queued_messages_set(capacity + PAHO_HEADROOM)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # -- what the producer side calls (never blocks) -----------------------------------------------
    def event(self, kind: str, event: dict, snapshot_jpeg: bytes | None) -> None:
        name = event["class_name"]
        with self._lock:
            self._learn(name)
            ids = self._open.setdefault(name, set())
            if kind == "opened":
                ids.add(event["id"])
            else:
                ids.discard(event["id"])
            self._dirty.add("states")
            if snapshot_jpeg:
                self._snapshot = snapshot_jpeg
                self._dirty.add("snapshot")
        self.queue.put((kind, event))
        self.queue.poke()  # the state changed even when the queue was full

    def counts(self, per_class: dict[str, int]) -> None:
        with self._lock:
            if per_class == self._counts:
                return
            for name in per_class:
                self._learn(name)
            self._counts = dict(per_class)
            self._dirty.add("counts")
        self.queue.poke()

    def classes(self, names: list[str]) -> None:
        """Announce these classes' entities to Home Assistant now, before their first event."""
        with self._lock:
            for name in names:
                self._learn(name)
        self.queue.poke()

    def nothing_tracked(self) -> None:
        """The stream ended: every class OFF and counted 0 (retained), whatever events were still open."""
        with self._lock:
            self._open.clear()
            self._counts = {}
            self._dirty.update({"states", "counts"})
        self.queue.poke()

    def _learn(self, name: str) -> None:
        """Add a class (under the lock); its entities are announced on the next flush."""
        if name not in self._classes:
            self._classes.append(name)
            self._dirty.update({"discovery", "states", "counts"})

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        logger.info("MQTT output to %s, topics under %s/", self.label, self.topics.prefix)
        self.state = "connecting"
        self.client.connect_async(self.broker.host, self.broker.port, self.keepalive)
        self.client.loop_start()  # its thread retries the first connection too (retry_first_connection)
        self._worker.start(self._run)

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is pending (the worker's last flush), say "offline" and disconnect."""
        self._worker.stop(timeout)
        if self._connected:
            goodbye = self.client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            if goodbye.rc == paho.MQTT_ERR_SUCCESS:
                goodbye.wait_for_publish(GOODBYE_WAIT_S)
        self.client.disconnect()
        self.client.loop_stop()
        self.state = "stopped"

    def status(self) -> dict:
        return {"kind": self.kind, "target": self.label, "state": self.state, "queued": len(self.queue),
                "connections": self.connections, "last_error": self.last_error, "prefix": self.topics.prefix,
                **self.counters.as_dict()}

    # -- paho's loop thread --------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.state, self.last_error = "refused", str(reason_code)
            logger.warning("MQTT broker %s refused the connection: %s", self.label, reason_code)
            return
        self.connections += 1
        self._connected = True
        self.state, self.last_error = "connected", None
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        if self.topics.discovery_prefix:
            client.subscribe(self.topics.ha_status)
        with self._lock:
            self._dirty.update({"discovery", "states", "counts", "snapshot"})
        logger.info("MQTT connected to %s", self.label)
        self.queue.poke()

    def _on_connect_fail(self, client, userdata) -> None:
        self.connect_failures += 1
        self.last_error = "cannot reach the broker"
        self.state = "reconnecting" if self.connections else "connecting"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._connected = False
        if not self._worker.stopping and self.state != "refused":  # keep saying why, until a connection works
            self.state, self.last_error = "reconnecting", str(reason_code)
            if was:
                logger.warning("MQTT lost %s (%s): reconnecting", self.label, reason_code)

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self.topics.ha_status and message.payload == ONLINE.encode():
            with self._lock:  # Home Assistant restarted: tell it everything again
                self._dirty.update({"discovery", "states", "counts", "snapshot"})
            self.queue.poke()

    # -- our worker ----------------------------------------------------------------------------
    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.queue.wait(IDLE_WAKE_S, for_items=self._connected)
            self.wakeups += 1
            if self._connected and not stop.is_set():
                self._flush_state()
                self._send_events(stop)
            self._count_acknowledged()
        if self._connected:  # stopping: the last states and events go out before "offline"
            self._flush_state()
            self._send_events()

    def _take_dirty(self) -> tuple[set[str], list[str], dict[str, set], dict[str, int], bytes | None]:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            return dirty, list(self._classes), {k: set(v) for k, v in self._open.items()}, dict(self._counts), \
                self._snapshot

    def _flush_state(self) -> None:
        """Publish (retained) whatever state changed since the last flush."""
        dirty, classes, open_events, counts, snapshot = self._take_dirty()
        messages: list[tuple[str, str | bytes]] = []
        if "discovery" in dirty:
            messages += discovery.discovery_messages(self.topics, classes, self.version)
        if "states" in dirty:
            messages += [(self.topics.state(name), ON if open_events.get(name) else OFF) for name in classes]
        if "counts" in dirty:
            messages.append((self.topics.counts, json.dumps(counts, sort_keys=True)))
            messages += [(self.topics.count(name), str(int(counts.get(name, 0)))) for name in classes]
        if "snapshot" in dirty and snapshot:
            messages.append((self.topics.snapshot, snapshot))
        for topic, payload in messages:
            if self.client.publish(topic, payload, qos=0, retain=True).rc != paho.MQTT_ERR_SUCCESS:
                with self._lock:  # lost the connection meanwhile: on_connect marks everything again anyway
                    self._dirty |= dirty
                return

    def _send_events(self, stop: threading.Event | None = None) -> None:
        """Publish queued events in order while connected (QoS 1: sent counts the broker's acknowledgements), until
        stop is set (None: the last ones, once stopping)."""
        while self._connected and not (stop and stop.is_set()):
            item = self.queue.pop()
            if item is None:
                return
            kind, event = item
            body = json.dumps(event_message(kind, event, self.links))
            info = self.client.publish(self.topics.events, body, qos=1)
            if info.rc == paho.MQTT_ERR_SUCCESS:
                self._in_flight.append(info)
            elif info.rc == paho.MQTT_ERR_QUEUE_SIZE:
                self.counters.add("dropped")
            elif info.rc != paho.MQTT_ERR_SUCCESS:
                self.counters.add("failed")
                self.last_error = paho.error_string(info.rc)

    def _count_acknowledged(self) -> None:
        """Count as sent the events the broker has acknowledged. Polled here rather than in paho's on_publish:
        that callback runs under paho's message lock, and taking a lock of ours there would deadlock with a
        publish() from this thread."""
        waiting = []
        for info in self._in_flight:
            if not info.is_published():
                waiting.append(info)
        if len(waiting) < len(self._in_flight):
            self.counters.add("sent", len(self._in_flight) - len(waiting))
            self._in_flight = waiting
