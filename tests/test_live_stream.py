"""A real waitress server on 127.0.0.1: concurrent MJPEG viewers, stop, reset."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import requests

from harness.client import upload, video_feed
from harness.waiting import wait_for
from server.files import sha256_of


class Viewer(threading.Thread):
    """Read /video_feed, decoding every JPEG, until the server ends the response."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base = base
        self.shapes: list[tuple[int, ...]] = []
        self.ended = threading.Event()
        self.error: Exception | None = None

    def run(self):
        try:
            with video_feed(self.base, timeout=10) as jpegs:
                for jpeg in jpegs:
                    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                    assert image is not None, "a part is not a decodable JPEG"
                    self.shapes.append(image.shape)
        except Exception as exc:  # reported by the test thread
            self.error = exc
        finally:
            self.ended.set()


def test_three_viewers_share_one_stream_and_stop_ends_them(live_server, make_video, demo_onnx):
    base = live_server.url
    assert upload(base, "/upload/video", make_video("clip.avi", frames=60)).status_code == 201
    assert upload(base, "/upload/model", demo_onnx).status_code == 201
    requests.post(f"{base}/api/settings", json={"imgsz": 320, "conf": 0.01}, timeout=5)
    assert requests.post(f"{base}/stream/start", timeout=10).json() == {"streaming": True}

    viewers = [Viewer(base) for _ in range(3)]
    for viewer in viewers:
        viewer.start()
    assert wait_for(lambda: all(len(v.shapes) >= 5 for v in viewers)), [len(v.shapes) for v in viewers]
    status = requests.get(f"{base}/api/status", timeout=5).json()
    assert status["stats"]["viewers"] == 3
    assert all(shape == (480, 640, 3) for v in viewers for shape in v.shapes)
    # One producer: frames made, not frames sent, is what the stats count.
    assert status["stats"]["frames"] < sum(len(v.shapes) for v in viewers)
    assert status["stats"]["latency_ms"]["inference"] > 0

    refused = requests.post(f"{base}/reset", timeout=5)
    assert refused.status_code == 409
    assert requests.post(f"{base}/stream/stop", timeout=10).json() == {"streaming": False}
    assert all(v.ended.wait(timeout=30) for v in viewers)  # stopping ends every viewer's response
    assert [v.error for v in viewers] == [None, None, None]
    assert requests.get(f"{base}/video_feed", timeout=5).status_code == 409
    workers = {t.name for t in threading.enumerate()}
    assert not workers & {"stream-detect", "stream-render", "frame-source"}, "nothing may run once the stream stopped"

    deleted = requests.post(f"{base}/reset", timeout=5).json()["deleted"]
    engine_onnx = sha256_of(demo_onnx)  # the ONNX the engines run, a link to the upload, and its NCNN copy
    assert sorted(deleted) == [f"cache/{engine_onnx}.ncnn.bin", f"cache/{engine_onnx}.ncnn.json",
                              f"cache/{engine_onnx}.ncnn.param", f"cache/{engine_onnx}.onnx",
                              "model/shapes-yolov8n.onnx", "video/clip.avi"]
    assert list(live_server.uploads.iterdir()) == []


def test_disconnecting_viewer_is_released(live_server, make_video, demo_onnx):
    base = live_server.url
    upload(base, "/upload/video", make_video())
    upload(base, "/upload/model", demo_onnx)
    requests.post(f"{base}/api/settings", json={"imgsz": 320}, timeout=5)
    requests.post(f"{base}/stream/start", timeout=10)
    viewers = lambda: requests.get(f"{base}/api/status", timeout=5).json()["stats"]["viewers"]  # noqa: E731
    with video_feed(base, timeout=10) as jpegs:
        next(jpegs)
        assert viewers() == 1
    assert wait_for(lambda: viewers() == 0, timeout=10)
    requests.post(f"{base}/stream/stop", timeout=10)


def test_too_large_upload_over_http_is_json_413(serve):
    live = serve(max_video_mb=1, max_model_mb=1)
    response = upload(live, "/upload/video", name="big.mp4", payload=b"\0" * (3 * 1024 * 1024 // 2))
    assert response.status_code == 413 and "too large" in response.json()["error"]
    assert [p for p in live.uploads.rglob("*") if p.is_file()] == []
