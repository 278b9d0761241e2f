"""`python run.py` as a user starts it: flags, the LAN URL in the log, waitress, and no torch in the process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from server.config import REPO_ROOT, config_from_args

PORT_LINE = re.compile(r"serving on 127\.0\.0\.1:(\d+)")


def test_flags_fall_back_to_environment_variables(tmp_path):
    env = {"EDGE_PORT": "6001", "EDGE_UPLOADS": str(tmp_path), "EDGE_DEV": "1", "EDGE_THREADS": "8"}
    config = config_from_args([], environ=env)
    assert (config.port, config.uploads, config.dev, config.threads) == (6001, tmp_path, True, 8)
    config = config_from_args(["--port", "7000", "--log-level", "DEBUG"], environ=env)
    assert (config.port, config.log_level, config.host) == (7000, "DEBUG", "0.0.0.0")


def _start(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, int, Path]:
    log_path = tmp_path / "server.log"
    process = subprocess.Popen(
        [sys.executable, "run.py", "--host", "127.0.0.1", "--port", "0", "--uploads", str(tmp_path / "up"), *flags],
        cwd=REPO_ROOT,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = PORT_LINE.search(log_path.read_text())
        if match:
            return process, int(match.group(1)), log_path
        assert process.poll() is None, log_path.read_text()
        time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not start:\n" + log_path.read_text())


def _mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
def test_run_serves_with_waitress_and_never_loads_torch(tmp_path, make_video, demo_pt):
    process, port, log_path = _start(tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        assert "open http://127.0.0.1:" in log_path.read_text()
        assert requests.get(base + "/", timeout=5).headers["Server"] == "edge-detect"
        with demo_pt.open("rb") as handle:
            assert requests.post(base + "/upload/model", files={"file": handle}, timeout=300).status_code == 201
        with make_video().open("rb") as handle:
            assert requests.post(base + "/upload/video", files={"file": handle}, timeout=60).status_code == 201
        requests.post(base + "/api/settings", json={"imgsz": 320}, timeout=5)
        assert requests.post(base + "/stream/start", timeout=30).status_code == 200
        with requests.get(base + "/video_feed", stream=True, timeout=30) as feed:
            assert next(feed.iter_content(1024)).startswith(b"--frame")
        maps = _mapped_libraries(process.pid)
        assert "onnxruntime" in maps  # the check can see libraries at all
        assert "libtorch" not in maps
        requests.post(base + "/stream/stop", timeout=10)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    assert "shutting down" in log_path.read_text()


@pytest.mark.slow
def test_demo_flag_starts_streaming_with_detections(tmp_path):
    process, port, log_path = _start(tmp_path, "--demo")
    base = f"http://127.0.0.1:{port}"
    try:
        status = requests.get(base + "/api/status", timeout=5).json()
        assert status["demo"] is True and status["streaming"] is True
        assert status["model"]["classes"] == ["circle", "square", "triangle", "star", "cross"]
        assert status["video"]["width"] == 640 and status["video"]["frames"] == 500
        deadline = time.monotonic() + 60
        most = 0
        while time.monotonic() < deadline and most < 3:
            most = max(most, requests.get(base + "/api/status", timeout=5).json()["stats"]["detections"])
            time.sleep(0.2)
        assert most >= 3, "the demo should show several shapes detected at once"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    assert "shutting down" in log_path.read_text()
