"""Live sources without a server: URL checks, credential masking, newest-frame reading, backoff, camera command."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from harness.live_servers import write_frames
from harness.waiting import wait_for
from server.redaction import redact
from server.vision import sources
from server.vision.sources import (
    Backoff,
    LiveSource,
    SourceRejected,
    parse_source,
)


# -- what a user may type -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("rtsp://cam.local:554/stream1", "rtsp"),
        ("RTSPS://cam.local/stream1", "rtsp"),
        ("http://192.168.1.5/video.mjpg", "http"),
        ("https://example.org/live/index.m3u8", "hls"),
        ("http://example.org/live/INDEX.M3U8?token=1", "hls"),
    ],
)
def test_urls_are_sorted_by_kind(text, kind):
    assert parse_source(text).kind == kind


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "rtsp://"),
        ("rtmp://cam/live", "scheme 'rtmp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("/etc/passwd", "only /dev/videoN"),
        ("/dev/video0/../../etc/passwd", "only /dev/videoN"),
        ("/dev/sda", "only /dev/videoN"),
        ("relative/clip.mp4", "unsupported source"),
        ("http:///nohost", "has no host"),
        ("ffmpeg -i /dev/video0 -f mjpeg -", "unsupported source"),
        ("camera", "--camera"),
    ],
)
def test_other_sources_are_refused_with_what_was_tried(text, said):
    with pytest.raises(SourceRejected, match=None) as caught:
        parse_source(text)
    assert said in str(caught.value)


def test_a_missing_webcam_says_which_device_and_how_it_was_tried():
    missing = next(f"/dev/video{n}" for n in range(90, 100) if not os.path.exists(f"/dev/video{n}"))
    with pytest.raises(SourceRejected) as caught:
        parse_source(missing)
    assert missing in str(caught.value) and "V4L2" in str(caught.value)


def test_the_camera_command_is_only_taken_from_the_config():
    spec = parse_source("camera", camera_command="rpicam-vid -t 0 --codec mjpeg -o -")
    assert spec.kind == "camera" and spec.target.startswith("rpicam-vid")
    assert "rpicam" not in spec.label


def test_passwords_are_masked_everywhere_a_spec_is_shown():
    spec = parse_source("rtsp://admin:s3cret@10.0.0.7:554/h264")
    assert spec.label == "rtsp://admin:***@10.0.0.7:554/h264"
    assert "s3cret" not in repr(spec) and "s3cret" not in str(spec) and "s3cret" not in f"{spec}"
    assert redact("http://apitoken@cam/x.mjpg") == "http://***@cam/x.mjpg"
    assert redact("rtsp://cam/x") == "rtsp://cam/x"


def test_backoff_doubles_up_to_its_cap():
    assert [Backoff(0.5, 4.0).delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


# -- the reader: newest frame only, drops counted, reconnect, placeholder -------------------------
class FakeConnection:
    """Frames 0..count-1 as fast as asked, then a failure (None)."""

    fps = 25.0

    def __init__(self, count: int, gate: threading.Event | None = None):
        self.left = count
        self.sent = 0
        self.gate = gate
        self.closed = False

    def read(self):
        if self.gate is not None:
            self.gate.wait(5)
        if self.left <= 0:
            time.sleep(0.05)
            return None
        self.left -= 1
        self.sent += 1
        image = np.zeros((48, 64, 3), np.uint8)
        image[0, 0, 0] = self.sent
        return image

    def close(self):
        self.closed = True


def test_a_slow_consumer_gets_the_newest_frame_and_the_rest_count_as_drops():
    connection = FakeConnection(30)
    source = LiveSource(parse_source("rtsp://cam/x"), opener=lambda spec, timeout: connection, backoff=Backoff(5, 5))
    try:
        assert wait_for(lambda: source.received >= 30, timeout=5)
        frame = source.read(timeout=1)
        assert frame.image[0, 0, 0] == 30  # the last one sent, not the first
        assert source.drops == 29
        assert source.status()["drops"] == 29
    finally:
        source.close()
    assert connection.closed


def test_calibration_frames_are_the_sampled_images_themselves_and_ready_is_said_once(monkeypatch):
    monkeypatch.setattr(sources.live, "CALIBRATION_EVERY_S", 0.0)  # sample every frame instead of ten a second
    count = sources.CALIBRATION_FRAMES
    ready = []
    connection = FakeConnection(count + 10)
    source = LiveSource(parse_source("rtsp://cam/x"), opener=lambda spec, timeout: connection, backoff=Backoff(5, 5),
                        on_calibration_ready=lambda: ready.append(connection.sent))
    try:
        assert wait_for(lambda: source.received >= count + 10, timeout=10)
        assert ready == [count] and source.calibration_ready
        frames = source.calibration_frames(count)
        # BGR images as decoded, the newest last: no video written and read back in between.
        assert [int(f[0, 0, 0]) for f in frames] == list(range(11, count + 11))
        assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    finally:
        source.close()


def test_calibration_samples_of_a_large_camera_are_kept_shrunk(monkeypatch):
    monkeypatch.setattr(sources.live, "CALIBRATION_EVERY_S", 0.0)
    big = np.zeros((2160, 3840, 3), np.uint8)  # a 4K frame: 96 kept as they are would take 2.4 GB

    class FourK(FakeConnection):
        def read(self):
            return None if super().read() is None else big

    source = LiveSource(parse_source("rtsp://cam/x"), opener=lambda spec, timeout: FourK(3), backoff=Backoff(5, 5))
    try:
        assert wait_for(lambda: source.received >= 3, timeout=10)
        frame = source.read(timeout=1)
        assert frame.image.shape == (2160, 3840, 3)  # the stream itself is untouched
        samples = source.calibration_frames(sources.CALIBRATION_FRAMES)
        assert samples and all(s.shape == (720, 1280, 3) for s in samples)
    finally:
        source.close()


def test_a_failed_source_reconnects_and_shows_a_placeholder_meanwhile():
    opened = []

    def opener(spec, timeout):
        opened.append(time.monotonic())
        return FakeConnection(3) if len(opened) != 2 else None  # the second attempt cannot even connect

    source = LiveSource(parse_source("rtsp://cam/x"), opener=opener, backoff=Backoff(0.3, 0.6))
    try:
        assert wait_for(lambda: source.state == "reconnecting", timeout=5)
        frame = source.read(timeout=2)
        if not frame.placeholder:  # the newest real frame comes first if it was not read yet
            frame = source.read(timeout=2)
        assert frame.placeholder and frame.position == 0
        assert wait_for(lambda: len(opened) >= 3, timeout=5)
        assert opened[2] - opened[1] >= 0.6 - 0.05  # the second wait doubled
        assert wait_for(lambda: source.state in ("live", "reconnecting") and source.received > 3, timeout=5)
    finally:
        source.close()
    assert source.state == "ended"
    assert source.read(timeout=0.1) is None


def test_the_first_frame_seen_after_a_reconnect_has_position_zero_so_tracks_reset():
    gate = threading.Event()
    connections = [FakeConnection(5), FakeConnection(5, gate)]
    source = LiveSource(parse_source("rtsp://cam/x"), opener=lambda s, t: connections.pop(0) if connections else None,
                        backoff=Backoff(0.1, 0.1))
    try:
        assert wait_for(lambda: source.reconnects >= 1, timeout=5)  # the first connection ended
        last_before = source.read(timeout=1)
        assert not last_before.placeholder
        gate.set()  # the second connection sends five frames at once: the consumer sees only the newest
        assert wait_for(lambda: source.received >= 10, timeout=5)
        frame = source.read(timeout=1)
        while frame.placeholder:
            frame = source.read(timeout=1)
        assert frame.index > last_before.index and frame.position == 0
    finally:
        source.close()


def test_close_ends_the_attempts_promptly():
    source = LiveSource(parse_source("rtsp://cam/x"), opener=lambda s, t: None, backoff=Backoff(30, 30))
    assert wait_for(lambda: source.state == "reconnecting", timeout=5)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 2
    assert source.state == "ended" and not source._thread.is_alive()


# -- the camera command: MJPEG on stdout ----------------------------------------------------------
def _jpeg(value: int) -> bytes:
    image = np.full((48, 64, 3), value, np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_the_camera_command_is_cut_into_frames_at_jpeg_markers(tmp_path):
    stream = b"garbage" + _jpeg(40) + b"\x00\x01" + _jpeg(200) + _jpeg(120)
    blob = tmp_path / "camera.mjpeg"
    blob.write_bytes(stream)
    # Dribble the bytes out in odd-sized pieces, so markers fall across reads.
    writer = f"import sys,time; d=open({str(blob)!r},'rb').read(); [sys.stdout.buffer.write(d[i:i+7]) or sys.stdout.flush() for i in range(0,len(d),7)]; time.sleep(30)"
    spec = parse_source("camera", camera_command=f"{sys.executable} -c \"{writer}\"")
    connection = sources.open_connection(spec, timeout_s=5)
    try:
        means = [round(connection.read().mean()) for _ in range(3)]
    finally:
        connection.close()
    assert [abs(m - v) <= 3 for m, v in zip(means, (40, 200, 120))] == [True] * 3
    assert connection.process.poll() is not None  # closed means the command is gone


def test_a_silent_camera_command_counts_as_a_stall_and_is_killed():
    spec = parse_source("camera", camera_command="sleep 60")
    connection = sources.open_connection(spec, timeout_s=0.5)
    started = time.monotonic()
    assert connection.read() is None
    assert 0.4 < time.monotonic() - started < 3
    connection.close()
    assert connection.process.poll() is not None


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_an_ffmpeg_camera_command_streams_through_a_live_source(tmp_path):
    pattern = write_frames(tmp_path / "frames", count=10, width=320, height=240)
    command = f"ffmpeg -loglevel error -re -stream_loop -1 -framerate 25 -i {pattern} -c:v mjpeg -f mjpeg -"
    spec = parse_source("camera", camera_command=command)
    info = sources.probe_source(spec, timeout_s=10)
    assert (info.width, info.height) == (320, 240)
    source = LiveSource(spec, info)
    try:
        frames = [source.read(timeout=5) for _ in range(5)]
        assert all(f.image.shape == (240, 320, 3) and not f.placeholder for f in frames)
        assert source.state == "live"
    finally:
        source.close()
