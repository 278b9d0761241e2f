"""MQTT topic names and Home Assistant MQTT discovery payloads, as pure functions.

Home Assistant reads retained JSON configs on <discovery>/<component>/<node_id>/<object_id>/config (node
and object ids limited to [a-zA-Z0-9_-]) and creates the entities without YAML. Ours, all tied to one device
block so they appear as one device, and all marked unavailable when our availability topic says "offline":
  binary_sensor  one per class: ON while an event of that class is open (device_class occupancy)
  sensor         one per class: how many objects of that class are tracked now
  camera         the latest event's snapshot (raw JPEG bytes on the snapshot topic)
An empty retained payload on a config topic removes that entity (removal_messages).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

ONLINE, OFFLINE = "online", "offline"
ON, OFF = "ON", "OFF"
ORIGIN = {"name": "edge-detect"}  # HA logs which software announced an entity
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")


def slug(name: str) -> str:
    """Return name as a topic level and discovery id: [a-zA-Z0-9_-] only, lower case, never empty."""
    return _UNSAFE.sub("_", name.strip()).strip("_").lower() or "unnamed"


def check_topic_prefix(prefix: str, what: str) -> str:
    """Return prefix without outer slashes; raise ValueError if it holds wildcards or empty levels."""
    cleaned = prefix.strip().strip("/")
    if not cleaned or any(c in cleaned for c in "+#\0") or "//" in cleaned:
        raise ValueError(f"{what} '{prefix}' must be a topic prefix such as 'edge_detect' (no +, #, empty levels)")
    return cleaned


@dataclass(frozen=True)
class Topics:
    """Every topic the MQTT output publishes to, under one prefix."""

    prefix: str
    discovery_prefix: str  # "" turns Home Assistant discovery off

    @property
    def node_id(self) -> str:
        return slug(self.prefix)

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def counts(self) -> str:
        return f"{self.prefix}/counts"

    @property
    def snapshot(self) -> str:
        return f"{self.prefix}/snapshot"

    @property
    def ha_status(self) -> str:
        """Home Assistant announces its own restarts here ("online"): configs are sent again then."""
        return f"{self.discovery_prefix}/status"

    def state(self, class_name: str) -> str:
        return f"{self.prefix}/{slug(class_name)}/state"

    def count(self, class_name: str) -> str:
        return f"{self.prefix}/{slug(class_name)}/count"

    def config(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"


def device_block(topics: Topics, version: str = "") -> dict:
    """Return the device every entity belongs to (HA needs identifiers to group them)."""
    device = {"identifiers": [f"edge_detect_{topics.node_id}"], "name": f"Edge detect {topics.prefix}",
              "manufacturer": "edge-detect", "model": "object-detection streaming server"}
    if version:
        device["sw_version"] = version
    return device


def _common(topics: Topics, unique_id: str, name: str, device: dict) -> dict:
    return {"name": name, "unique_id": unique_id, "availability_topic": topics.availability,
            "payload_available": ONLINE, "payload_not_available": OFFLINE, "device": device, "origin": ORIGIN}


def binary_sensor_config(topics: Topics, class_name: str, device: dict) -> tuple[str, dict]:
    """Return (config topic, payload) of the binary sensor that is ON while a class's event is open."""
    object_id = f"{slug(class_name)}_detected"
    payload = _common(topics, f"{topics.node_id}_{object_id}", f"{class_name} detected", device)
    payload.update(state_topic=topics.state(class_name), payload_on=ON, payload_off=OFF,
                   device_class="occupancy")
    return topics.config("binary_sensor", object_id), payload


def count_sensor_config(topics: Topics, class_name: str, device: dict) -> tuple[str, dict]:
    """Return (config topic, payload) of the sensor counting a class's tracked objects."""
    object_id = f"{slug(class_name)}_count"
    payload = _common(topics, f"{topics.node_id}_{object_id}", f"{class_name} count", device)
    payload.update(state_topic=topics.count(class_name), state_class="measurement", icon="mdi:counter")
    return topics.config("sensor", object_id), payload


def camera_config(topics: Topics, device: dict) -> tuple[str, dict]:
    """Return (config topic, payload) of the camera showing the latest event's snapshot."""
    payload = _common(topics, f"{topics.node_id}_snapshot", "Latest snapshot", device)
    payload["topic"] = topics.snapshot
    return topics.config("camera", "snapshot"), payload


def discovery_messages(topics: Topics, classes: list[str], version: str = "") -> list[tuple[str, str]]:
    """Return every (config topic, JSON payload) to publish retained for these classes; none if discovery is off."""
    if not topics.discovery_prefix:
        return []
    device = device_block(topics, version)
    configs = [camera_config(topics, device)]
    for name in classes:
        configs += [binary_sensor_config(topics, name, device), count_sensor_config(topics, name, device)]
    return [(topic, json.dumps(payload, sort_keys=True)) for topic, payload in configs]


def removal_messages(topics: Topics, classes: list[str]) -> list[tuple[str, str]]:
    """Return the empty retained payloads that make Home Assistant forget these classes' entities."""
    if not topics.discovery_prefix:
        return []
    return [(topics.config(component, f"{slug(name)}_{suffix}"), "")
            for name in classes for component, suffix in (("binary_sensor", "detected"), ("sensor", "count"))]
