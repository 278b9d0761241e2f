"""Events reach the outputs on a real server: started with --mqtt-url and --webhook-url (a real mosquitto and a
real HTTP receiver), streaming the demo, the server publishes each event that opens, the per-class counts and
availability, and POSTs the events; the viewers' stream is unaffected."""

from __future__ import annotations

import json

import requests

from harness.waiting import wait_for
from server.web.demo import start_demo
from tests.support.helpers import config_for, serving
from tests.support.outputs_parts import Mosquitto, Receiver, Subscriber


def test_a_streaming_server_sends_its_events_to_mqtt_and_the_webhook(tmp_path):
    broker = Mosquitto(tmp_path)
    broker.start()
    receiver = Receiver()
    watch = Subscriber(broker.port)
    try:
        config = config_for(tmp_path, mqtt_url=broker.url, mqtt_prefix="edge_e2e", webhook_url=receiver.url,
                            public_url="http://camera.lan:5000")
        with serving(config) as live:
            start_demo(live.app.extensions["detection"])
            assert requests.post(live.url + "/api/settings", json={"imgsz": 320}, timeout=10).status_code == 200
            assert wait_for(lambda: watch.on("edge_e2e/events"), timeout=180), sorted(watch.topics())
            message = json.loads(watch.on("edge_e2e/events")[0].payload)
            assert message["type"] == "opened" and message["event"]["class_name"]
            assert message["snapshot_url"].startswith("http://camera.lan:5000/api/events/")
            assert watch.payload("edge_e2e/availability") == b"online"
            assert wait_for(lambda: watch.payload("edge_e2e/counts") is not None, timeout=30)
            assert wait_for(lambda: receiver.bodies, timeout=60) and receiver.bodies[0]["event"]["id"] == message["event"]["id"]
            status = requests.get(live.url + "/api/status", timeout=10).json()
            assert {o["kind"] for o in status["outputs"]} == {"mqtt", "webhook"}
            assert all("s3cret" not in json.dumps(o) for o in status["outputs"])
            assert requests.post(live.url + "/stream/stop", timeout=15).status_code == 200
    finally:
        watch.client.loop_stop()
        broker.kill()
        receiver.close()
