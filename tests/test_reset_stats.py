"""Stop and reset leave no stale numbers or settings behind."""

from __future__ import annotations

from tests.waiting import wait_for


def upload(client, route, path):
    with open(path, "rb") as handle:
        response = client.post(route, data={"file": (handle, path.name)}, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response


def test_stop_clears_the_stats(client, make_video, demo_onnx):
    upload(client, "/upload/video", make_video(frames=30))
    upload(client, "/upload/model", demo_onnx)
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
