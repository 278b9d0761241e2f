"""`python run.py` as a user starts it: flags, the LAN URL in the log, waitress, and no torch in the process."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests

from harness.client import upload, video_feed
from harness.server_process import ServerProcess
from server.config import ENGINE_CHOICES, config_from_args
from server.vision.engines import AUTO, ENGINES


def test_flags_fall_back_to_environment_variables(tmp_path):
    env = {"EDGE_PORT": "6001", "EDGE_UPLOADS": str(tmp_path), "EDGE_DEV": "1", "EDGE_THREADS": "8"}
    config = config_from_args([], environ=env)
    assert (config.port, config.uploads, config.dev, config.http_threads) == (6001, tmp_path, True, 8)
    config = config_from_args(["--port", "7000", "--log-level", "DEBUG"], environ=env)
    assert (config.port, config.log_level, config.host) == (7000, "DEBUG", "0.0.0.0")


def test_the_engine_is_auto_unless_a_flag_or_the_environment_names_a_known_one(capsys):
    assert config_from_args([], environ={}).engine == "auto"
    assert config_from_args([], environ={"EDGE_ENGINE": "ncnn"}).engine == "ncnn"
    for argv, env in ((["--engine", "tensorrt"], {}), ([], {"EDGE_ENGINE": "tensorrt"})):
        with pytest.raises(SystemExit):
            config_from_args(argv, environ=env)
        assert "choose from" in capsys.readouterr().err


def test_the_configs_engine_names_are_the_engines_own():
    """The base holds them as data (it imports nothing above it): they must still name the engines that exist."""
    assert ENGINE_CHOICES == (AUTO, *ENGINES)


def _mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
def test_run_serves_with_waitress_and_never_loads_torch(tmp_path, make_video, demo_pt):
    server = ServerProcess(tmp_path / "up", log_path=tmp_path / "server.log")
    process, base = server.process, server.url
    try:
        assert "open http://127.0.0.1:" in server.log()
        assert requests.get(base + "/", timeout=5).headers["Server"] == "edge-detect"
        assert upload(base, "/upload/model", demo_pt, timeout=300).status_code == 201
        assert upload(base, "/upload/video", make_video()).status_code == 201
        requests.post(base + "/api/settings", json={"imgsz": 320}, timeout=5)
        assert requests.post(base + "/stream/start", timeout=30).status_code == 200
        with video_feed(base) as jpegs:
            assert next(jpegs).startswith(b"\xff\xd8")
        maps = _mapped_libraries(process.pid)
        assert "onnxruntime" in maps  # the check can see libraries at all
        assert "libtorch" not in maps
        requests.post(base + "/stream/stop", timeout=10)
    finally:
        server.stop(signal.SIGINT)
    assert "shutting down" in server.log()


@pytest.mark.slow
def test_demo_flag_starts_streaming_with_detections(tmp_path):
    server = ServerProcess(tmp_path / "up", "--demo", log_path=tmp_path / "server.log")
    base = server.url
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
        server.stop(signal.SIGTERM)
    assert "shutting down" in server.log()


def test_sigusr1_writes_every_threads_stack_to_the_log_and_the_server_keeps_serving(tmp_path):
    server = ServerProcess(tmp_path / "up", log_path=tmp_path / "server.log")
    try:
        server.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "most recent call first" not in server.log():
            time.sleep(0.1)
        assert "most recent call first" in server.log() and "serve" in server.log()
        assert requests.get(server.url + "/api/status", timeout=5).status_code == 200
    finally:
        assert server.stop(signal.SIGTERM) == 0
