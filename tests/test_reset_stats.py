"""Stop and reset leave no stale numbers or settings behind; each viewer gets at most --viewer-max-fps."""

from __future__ import annotations

import time

import requests

from harness.client import upload, video_feed
from harness.waiting import wait_for


def test_stop_clears_the_stats(client, make_video, demo_onnx):
    assert upload(client, "/upload/video", make_video(frames=30)).status_code == 201
    assert upload(client, "/upload/model", demo_onnx).status_code == 201
    client.post("/api/settings", json={"imgsz": 320, "realtime": False})
    client.post("/stream/start")
    assert wait_for(lambda: client.get("/api/status").get_json()["stats"]["frames"] >= 3, timeout=60)
    client.post("/stream/stop")
    stats = client.get("/api/status").get_json()["stats"]
    assert stats["frames"] == 0 and stats["fps"] == 0 and stats["detections"] == 0
    assert stats["frame_latency_ms"] == 0 and all(v == 0 for v in stats["latency_ms"].values())


def test_reset_puts_precision_back_to_the_default(client):
    assert client.post("/api/settings", json={"precision": "int8"}).get_json()["precision"] == "int8"
    client.post("/reset")
    assert client.get("/api/status").get_json()["settings"]["precision"] == "fp32"


def test_viewer_max_fps_caps_what_each_viewer_gets(serve, make_video, demo_onnx):
    server = serve(viewer_max_fps=4)
    for path, kind in ((make_video(frames=40), "video"), (demo_onnx, "model")):
        assert upload(server, f"/upload/{kind}", path).status_code == 201
    requests.post(f"{server.url}/api/settings", json={"imgsz": 320, "realtime": False}, timeout=5)
    assert requests.post(f"{server.url}/stream/start", timeout=30).ok
    status = lambda: requests.get(f"{server.url}/api/status", timeout=5).json()["stats"]  # noqa: E731
    assert wait_for(lambda: status()["frames"] >= 2, timeout=60)
    received, started = 0, None
    with video_feed(server.url, timeout=10) as jpegs:
        for _ in jpegs:
            received += 1
            if received == 1:
                started, produced = time.monotonic(), status()["frames"]
            elif time.monotonic() - started >= 2.0:
                break
    elapsed = time.monotonic() - started
    produced = status()["frames"] - produced
    requests.post(f"{server.url}/stream/stop", timeout=10)
    assert received <= 4 * elapsed + 2  # 4 fps over the time that really passed, give or take the edges
    assert produced > received  # the producer was not held back to the viewer's pace
