"""Outputs: where events and counts go besides the page (a webhook, an MQTT broker with Home Assistant discovery).

The interface the events recorder calls (from any thread, the producer's included; every call returns at
once, all network work happens on the outputs' own threads):
  event_opened(event, snapshot_jpeg)   an event opened; event is a dict with at least "id" and "class_name"
  event_closed(event, snapshot_jpeg)   the same event closed (its final best snapshot, or None)
  counts(per_class)                    {class name: tracked objects now}, at most a few times a second
  classes(names)                       the classes events are made for (announced to Home Assistant early)
  nothing_tracked()                    the stream ended: no object is tracked, no event open (MQTT: OFF and 0)
  start() / stop()                     threads up / joined (stop sends what is pending, then "offline")
  status()                             [{kind, target (no secrets), state, sent, failed, dropped, queued, ...}],
                                       None when no output is configured
Outputs() is the null object, "nowhere to send": every call a no-op. Build it from the config with build_outputs; server.outputs.adapter turns the stream's tap into counts().
"""

from __future__ import annotations

import logging

from server.outputs.discovery import Topics, check_topic_prefix
from server.outputs.messages import CLOSED, OPENED, EventLinks, check_event, public_base_url

logger = logging.getLogger(__name__)

__all__ = ["Outputs", "build_outputs", "public_base_url"]


class Outputs:
    """Fan each call out to every configured output; with none configured (Outputs()) every call is a no-op."""

    def __init__(self, outputs: list | None = None):
        self.outputs = list(outputs or [])

    @property
    def configured(self) -> bool:
        return bool(self.outputs)

    def event_opened(self, event: dict, snapshot_jpeg: bytes | None = None) -> None:
        self._event(OPENED, event, snapshot_jpeg)

    def event_closed(self, event: dict, snapshot_jpeg: bytes | None = None) -> None:
        self._event(CLOSED, event, snapshot_jpeg)

    def _event(self, kind: str, event: dict, snapshot_jpeg: bytes | None) -> None:
        check_event(event)
        for output in self.outputs:
            output.event(kind, event, snapshot_jpeg)

    def counts(self, per_class: dict[str, int]) -> None:
        for output in self.outputs:
            output.counts(per_class)

    def classes(self, names: list[str]) -> None:
        for output in self.outputs:
            output.classes(list(names))

    def nothing_tracked(self) -> None:
        for output in self.outputs:
            output.nothing_tracked()

    def start(self) -> None:
        for output in self.outputs:
            output.start()

    def stop(self, timeout: float = 5.0) -> None:
        for output in self.outputs:
            output.stop(timeout)

    def status(self) -> list[dict] | None:
        return [output.status() for output in self.outputs] if self.outputs else None


def build_outputs(config, links: EventLinks, version: str = "") -> Outputs:
    """Return the outputs the config asks for (none: Outputs(), the null object); raise ValueError on a bad flag."""
    outputs = []
    if config.webhook_url:
        from server.outputs.webhook import WebhookOutput

        outputs.append(WebhookOutput(config.webhook_url, links, timeout=config.webhook_timeout,
                                     retries=config.webhook_retries, capacity=config.output_queue,
                                     inline_snapshot=config.webhook_snapshot))
    if config.mqtt_url:
        from server.outputs.mqtt import MqttOutput

        discovery_prefix = config.mqtt_discovery.strip()
        topics = Topics(check_topic_prefix(config.mqtt_prefix, "--mqtt-prefix"),
                        check_topic_prefix(discovery_prefix, "--mqtt-discovery") if discovery_prefix else "")
        outputs.append(MqttOutput(config.mqtt_url, links, topics=topics, capacity=config.output_queue,
                                  version=version))
    return Outputs(outputs)
