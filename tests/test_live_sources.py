"""Live sources end to end: a real waitress server reading a real RTSP (GStreamer) or HTTP MJPEG (ffmpeg)
server, killed, frozen and restarted mid-stream while a viewer stays connected."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import socket
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest
import requests

from harness.client import free_port, upload, video_feed
from harness.live_servers import (
    ffmpeg_missing,
    mjpeg_server,
    rtsp_missing,
    rtsp_server,
    write_frames,
)
from harness.waiting import wait_for
from server.config import config_from_args
from server.vision.pipeline import FramePipeline
from server.vision.settings import Settings
from server.vision.sources import CaptureConnection, LiveSource, SourceInfo, parse_source
from server.vision.stream import StreamRunner
from server.vision.tracker import Tracker
from tests.support.helpers import upload_model_at_320

RESUME_LIMIT_S = 10.0
SOURCE_TIMEOUT_S = 2.0


def _needs(reason: str | None):
    # In CI a missing source server is a failure, not a skip: .ci/run installs them.
    if reason and not os.environ.get("CI"):
        pytest.skip(reason)


@pytest.fixture
def server(serve) -> str:
    """A real server whose live sources give up on a silent stream after SOURCE_TIMEOUT_S."""
    return serve(source_timeout=SOURCE_TIMEOUT_S).url


@pytest.fixture
def frames(tmp_path) -> str:
    return write_frames(tmp_path / "frames")


def source_status(url: str) -> dict:
    return requests.get(f"{url}/api/status", timeout=10).json()["source"] or {}


class Viewer(threading.Thread):
    """One MJPEG viewer connection for the whole test; sorts frames into real ones and placeholders."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.real = 0
        self.placeholders = 0
        self.ended = threading.Event()
        self.error: Exception | None = None

    def run(self):
        try:
            with video_feed(self.url) as jpegs:
                for jpeg in jpegs:
                    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
                    # The served scene is a mid-grey texture; the "reconnecting" placeholder is near black.
                    if image.mean() < 60:
                        self.placeholders += 1
                    else:
                        self.real += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc
        finally:
            self.ended.set()


def watch_stream(url: str, source_url: str, demo_onnx) -> Viewer:
    upload_model_at_320(url, demo_onnx)
    response = requests.post(f"{url}/source", json={"url": source_url}, timeout=30)
    assert response.status_code == 200, response.text
    requests.post(f"{url}/stream/start", timeout=30).raise_for_status()
    viewer = Viewer(url)
    viewer.start()
    assert wait_for(lambda: viewer.real >= 10, timeout=30), (viewer.real, viewer.error)
    assert source_status(url)["state"] == "live"
    return viewer


def kill_and_restart(url: str, source, viewer: Viewer) -> float:
    """Kill the source server, see the viewer get placeholders, restart it; return seconds to resume."""
    source.kill()
    assert wait_for(lambda: source_status(url)["state"] == "reconnecting", timeout=SOURCE_TIMEOUT_S + 10)
    assert wait_for(lambda: viewer.placeholders >= 1, timeout=5)
    time.sleep(2)  # down for a while: the backoff grows
    assert source_status(url)["attempt"] >= 1
    before = viewer.real
    source.start()
    restarted = time.monotonic()
    assert wait_for(lambda: viewer.real >= before + 5, timeout=RESUME_LIMIT_S + 5)
    return time.monotonic() - restarted


@pytest.mark.slow
def test_rtsp_source_streams_and_resumes_after_the_server_restarts(server, frames, demo_onnx, monkeypatch):
    _needs(rtsp_missing())
    resets = []
    real_reset = FramePipeline.reset
    monkeypatch.setattr(FramePipeline, "reset", lambda self: resets.append(time.monotonic()) or real_reset(self))
    rtsp = rtsp_server(frames).start()
    try:
        viewer = watch_stream(server, rtsp.url, demo_onnx)
        status = source_status(server)
        assert (status["kind"], status["width"], status["height"]) == ("rtsp", 640, 480)
        assert status["fps"] > 0 and status["lag_ms"] is not None
        assert status["reconnects"] == 0  # a reader that keeps up is never taken for a stalled or late one
        resets_before = len(resets)

        resumed_in = kill_and_restart(server, rtsp, viewer)

        assert resumed_in < RESUME_LIMIT_S
        assert not viewer.ended.is_set(), "the viewer had to reconnect"
        status = source_status(server)
        assert status["state"] == "live" and status["reconnects"] >= 1
        assert len(resets) > resets_before, "tracks were not reset when frames came back"
        requests.post(f"{server}/stream/stop", timeout=10).raise_for_status()
        assert viewer.ended.wait(10)
        assert source_status(server)["state"] in ("ended", "idle")
    finally:
        rtsp.kill()


@pytest.mark.slow
def test_http_mjpeg_source_resumes_after_ffmpeg_restarts(server, frames, demo_onnx):
    _needs(ffmpeg_missing())
    http = mjpeg_server(frames).start()
    try:
        viewer = watch_stream(server, http.url, demo_onnx)
        assert source_status(server)["kind"] == "http"
        assert kill_and_restart(server, http, viewer) < RESUME_LIMIT_S
        assert not viewer.ended.is_set()
    finally:
        http.kill()


@pytest.mark.slow
def test_a_frozen_source_is_detected_as_a_stall_and_resumes(server, frames, demo_onnx):
    _needs(rtsp_missing())
    rtsp = rtsp_server(frames).start()
    try:
        viewer = watch_stream(server, rtsp.url, demo_onnx)
        rtsp.pause()  # the TCP connection stays up; only the frames stop
        assert wait_for(lambda: source_status(server)["state"] == "reconnecting", timeout=SOURCE_TIMEOUT_S + 8)
        before = viewer.real
        rtsp.resume()
        assert wait_for(lambda: viewer.real >= before + 5, timeout=RESUME_LIMIT_S + 5)
        assert source_status(server)["state"] == "live"
    finally:
        rtsp.kill()


def test_an_unreachable_source_is_a_400_that_never_shows_the_password(server, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there
    # The request's own timeout is the bound: a probe without one would never answer.
    response = requests.post(f"{server}/source", json={"url": f"rtsp://admin:hunter2@127.0.0.1:{port}/live"}, timeout=30)
    assert response.status_code == 400
    message = response.json()["error"]
    assert f"rtsp://admin:***@127.0.0.1:{port}/live" in message and "RTSP" in message
    out, err = capfd.readouterr()
    assert "hunter2" not in caplog.text + out + err + message
    assert source_status(server) == {}  # nothing was selected


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_source_that_accepts_but_never_answers_is_a_400_after_a_bounded_probe(server, scheme):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts a byte
        port = silent.getsockname()[1]
        # The request's own timeout is the bound: a probe without one would wait on the silent socket forever.
        response = requests.post(f"{server}/source", json={"url": f"{scheme}://127.0.0.1:{port}/cam"}, timeout=60)
    assert response.status_code == 400, response.text
    assert f"{scheme}://127.0.0.1:{port}/cam" in response.json()["error"]


@pytest.mark.slow
def test_credentials_work_but_status_and_logs_show_them_masked(server, frames, caplog, capfd):
    _needs(ffmpeg_missing())
    caplog.set_level(logging.DEBUG)
    http = mjpeg_server(frames).start()
    try:
        secret_url = http.url.replace("http://", "http://viewer:hunter2@")
        response = requests.post(f"{server}/source", json={"url": secret_url}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.text + requests.get(f"{server}/api/status", timeout=10).text
        assert "viewer:***@" in body
        out, err = capfd.readouterr()
        assert "hunter2" not in body + caplog.text + out + err
    finally:
        http.kill()


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("/etc/passwd", "only /dev/videoN"),
        ("/dev/video97", "no such camera device /dev/video97"),
        ("camera", "--camera"),
        ("rtmp://127.0.0.1/live", "scheme 'rtmp'"),
    ],
)
def test_sources_that_cannot_be_used_are_400_saying_what_was_tried(server, url, said):
    response = requests.post(f"{server}/source", json={"url": url}, timeout=10)
    assert response.status_code == 400
    assert said in response.json()["error"]


def test_a_body_without_a_url_is_a_400(server):
    for body in ({}, {"url": 5}, ["rtsp://x"]):
        response = requests.post(f"{server}/source", json=body, timeout=10)
        assert response.status_code == 400 and "url" in response.json()["error"]


@pytest.mark.slow
def test_a_source_and_an_uploaded_video_replace_each_other_and_reset_clears_both(server, frames, make_video, demo_onnx):
    _needs(ffmpeg_missing())
    http = mjpeg_server(frames).start()
    try:
        upload_model_at_320(server, demo_onnx)
        video = make_video("clip.mp4", frames=10)
        assert upload(server, "/upload/video", video).ok
        assert requests.post(f"{server}/source", json={"url": http.url}, timeout=30).ok
        status = requests.get(f"{server}/api/status", timeout=10).json()
        assert status["video"] is None and status["source"]["kind"] == "http"

        requests.post(f"{server}/stream/start", timeout=30).raise_for_status()
        busy = requests.post(f"{server}/source", json={"url": http.url}, timeout=30)
        assert busy.status_code == 409
        requests.post(f"{server}/stream/stop", timeout=30).raise_for_status()

        assert upload(server, "/upload/video", video).ok
        status = requests.get(f"{server}/api/status", timeout=10).json()
        assert status["video"] is not None and status["source"] is None

        assert requests.post(f"{server}/source", json={"url": http.url}, timeout=30).ok
        assert requests.post(f"{server}/reset", timeout=30).ok
        status = requests.get(f"{server}/api/status", timeout=10).json()
        assert status["video"] is None and status["source"] is None and status["model"] is None
    finally:
        http.kill()


def test_the_camera_command_comes_from_the_flag_or_the_environment_only():
    assert config_from_args(["--camera", "rpicam-vid -t 0 -o -"], environ={}).camera == "rpicam-vid -t 0 -o -"
    assert config_from_args([], environ={"EDGE_CAMERA": "rpicam-vid -o -"}).camera == "rpicam-vid -o -"
    assert config_from_args([], environ={}).camera == ""


class SteadyCamera:
    """A connection that sends a frame every 20 ms, like a camera would (declared fps aside)."""

    fps = 0.0

    def __init__(self):
        self.image = np.full((120, 160, 3), 90, np.uint8)

    def read(self):
        time.sleep(0.02)
        return self.image

    def close(self):
        pass


def test_a_live_source_is_never_paced_against_a_nominal_fps(demo_detector):
    # The camera sets the pace; pacing its frames against the fps it declares would add lag or drop frames.
    # Declared: one frame per 1000 s. Paced against that, the producer would publish one frame and wait.
    info = SourceInfo(160, 120, fps=0.001)
    pipeline = FramePipeline(lambda s: demo_detector, [f"c{i}" for i in range(5)], tracker_factory=Tracker)
    runner = StreamRunner(lambda loop: LiveSource(parse_source("rtsp://cam/x"), info, opener=lambda s, t: SteadyCamera()),
                          pipeline, lambda: Settings(imgsz=320, realtime=True, threads=1), lambda error: None)
    runner.start()
    try:
        assert wait_for(lambda: runner.hub.published >= 5, timeout=60)
    finally:
        runner.stop()


@pytest.mark.slow
def test_a_configured_camera_is_the_source_at_start_up(serve, demo_onnx, tmp_path, make_video):
    _needs(ffmpeg_missing())
    pattern = write_frames(tmp_path / "camera", count=10, width=320, height=240)
    command = f"ffmpeg -loglevel error -re -stream_loop -1 -framerate 25 -i {pattern} -c:v mjpeg -f mjpeg -"
    url = serve(camera=command, source_timeout=SOURCE_TIMEOUT_S).url
    status = requests.get(f"{url}/api/status", timeout=10)
    assert status.json()["source"]["kind"] == "camera" and status.json()["source"]["state"] == "idle"
    assert "ffmpeg" not in status.text  # the command is the owner's business, not the page's

    upload_model_at_320(url, demo_onnx)
    requests.post(f"{url}/stream/start", timeout=30).raise_for_status()
    viewer = Viewer(url)
    viewer.start()
    assert wait_for(lambda: viewer.real >= 5, timeout=30), viewer.error
    source = source_status(url)
    assert (source["state"], source["width"], source["height"]) == ("live", 320, 240)
    requests.post(f"{url}/stream/stop", timeout=30).raise_for_status()

    video = make_video("clip.mp4", frames=10)
    assert upload(url, "/upload/video", video).ok
    assert source_status(url) == {}
    again = requests.post(f"{url}/source", json={"url": "camera"}, timeout=30)
    assert again.status_code == 200 and again.json()["source"]["kind"] == "camera"


@pytest.mark.slow
def test_int8_is_tuned_on_frames_of_the_live_stream_when_there_is_no_video(serve, frames, demo_onnx):
    _needs(ffmpeg_missing())
    http = mjpeg_server(frames).start()
    try:
        url = serve(int8_recipes="u8s8-pc-rr", source_timeout=SOURCE_TIMEOUT_S).url
        upload_model_at_320(url, demo_onnx)
        assert requests.post(f"{url}/source", json={"url": http.url}, timeout=30).ok
        # Asked for before the stream has any frames: tuning starts once the source has sampled enough.
        assert requests.post(f"{url}/api/settings", json={"precision": "int8"}, timeout=10).ok
        requests.post(f"{url}/stream/start", timeout=30).raise_for_status()

        def active() -> str:
            return requests.get(f"{url}/api/status", timeout=10).json()["precision"]["active"]

        assert wait_for(lambda: active() == "int8", timeout=300, interval=1)
        status = requests.get(f"{url}/api/status", timeout=10).json()
        assert status["streaming"] and status["source"]["state"] == "live" and status["error"] is None
    finally:
        http.kill()


@pytest.mark.slow
def test_an_hls_playlist_is_read_as_a_live_source(server, frames, tmp_path):
    _needs(ffmpeg_missing())
    folder = tmp_path / "hls"
    folder.mkdir()
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-framerate", "25", "-i", frames, "-c:v", "libx264", "-g", "25",
         "-f", "hls", "-hls_time", "1", "-hls_list_size", "0", str(folder / "live.m3u8")],
        check=True, timeout=60,
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as files:
        threading.Thread(target=files.serve_forever, daemon=True).start()
        playlist = f"http://127.0.0.1:{files.server_address[1]}/live.m3u8"
        response = requests.post(f"{server}/source", json={"url": playlist}, timeout=30)
        files.shutdown()
    assert response.status_code == 200, response.text
    source = response.json()["source"]
    assert (source["kind"], source["width"], source["height"]) == ("hls", 640, 480)


@pytest.mark.slow
def test_an_rtsp_reader_that_falls_behind_the_camera_reconnects_to_catch_up(frames):
    _needs(rtsp_missing())
    rtsp = rtsp_server(frames).start()
    try:
        connection = CaptureConnection(parse_source(rtsp.url), timeout_s=5, max_behind_s=1.0)
        try:
            assert all(connection.read() is not None for _ in range(30))  # keeping up: never flagged
            time.sleep(2.5)  # decoding "stalls": the camera's frames pile up in the buffers
            assert any(connection.read() is None for _ in range(10))
        finally:
            connection.close()
    finally:
        rtsp.kill()


@pytest.mark.slow
def test_stop_ends_the_reconnect_attempts(server, frames, demo_onnx):
    _needs(ffmpeg_missing())
    http = mjpeg_server(frames).start()
    earlier = {t for t in threading.enumerate() if t.name == "live-source"}
    try:
        viewer = watch_stream(server, http.url, demo_onnx)
        http.kill()
        assert wait_for(lambda: source_status(server)["state"] == "reconnecting", timeout=SOURCE_TIMEOUT_S + 10)
        requests.post(f"{server}/stream/stop", timeout=30).raise_for_status()
        assert viewer.ended.wait(10)
        stopped = source_status(server)
        assert stopped["state"] == "ended"
        time.sleep(3)  # longer than the first backoff steps: an attempt would have been made by now
        assert source_status(server)["reconnects"] == stopped["reconnects"]
        assert not [t for t in threading.enumerate() if t.name == "live-source" and t not in earlier]
    finally:
        http.kill()
