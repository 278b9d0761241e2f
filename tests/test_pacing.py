"""Pacing that cannot starve: realtime playback of a video that decodes slower than its fps."""

from __future__ import annotations

import pytest
import requests

from harness.client import upload
from harness.waiting import wait_for

pytestmark = pytest.mark.slow


def test_a_video_decoding_slower_than_its_frame_rate_still_streams(live_server, make_video, demo_onnx):
    base = live_server.url
    # 1000 fps leaves 1 ms per frame: decoding a 1280x720 frame alone takes longer, let alone detecting on it.
    video = make_video("fast.mp4", width=1280, height=720, fps=1000, frames=40)
    assert upload(base, "/upload/video", video).status_code == 201
    assert upload(base, "/upload/model", demo_onnx).status_code == 201
    requests.post(f"{base}/api/settings", json={"imgsz": 320, "realtime": True, "loop": True}, timeout=5)
    assert requests.post(f"{base}/stream/start", timeout=30).status_code == 200

    def stats():
        return requests.get(f"{base}/api/status", timeout=5).json()["stats"]

    assert wait_for(lambda: stats()["frames"] >= 10, timeout=30), stats()
    assert stats()["dropped"] > 0  # it says so: the frames it could not show in time are counted
    requests.post(f"{base}/stream/stop", timeout=10)
