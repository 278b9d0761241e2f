"""A full disk: uploads, conversions and int8 builds on a real 40 MB tmpfs get 507, keep nothing, and break nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from harness.client import upload, video_feed
from harness.waiting import wait_for
from server import create_app
from server.events.store import EventQuery, EventRecord, EventStore
from server.jobs import JobBoard
from server.models import convert
from server.models.tuning import tune as tuning
from server.models.tuning.job import EngineTiming, TimingRequest
from server.storage import DiskSpace, InsufficientStorage
from server.vision.sources import sample_frames
from server.web.wsgi import upload_footprint
from tests.support.helpers import config_for, serving, write_video
from tests.support.small_disk import MB, every_file, fill, free_bytes, mounted_tmpfs

DISK_MB = 40
RESERVE_MB = 4
FULL = re.compile(r"not enough free space: ([\d.]+) MB free, ([\d.]+) MB needed \(including a ([\d.]+) MB reserve\)")


@pytest.fixture
def disk(request, tmp_path):
    """A small tmpfs of DISK_MB (or the MB a test asks for through indirect parametrization)."""
    with mounted_tmpfs(tmp_path / "disk", getattr(request, "param", DISK_MB)) as mounted:
        yield mounted


@pytest.fixture
def server(disk, tmp_path):
    """A real server whose uploads folder is on the small disk (stopped before the disk is unmounted)."""
    config = config_for(tmp_path, uploads=disk / "uploads", disk_reserve_mb=RESERVE_MB)
    with serving(config) as live:
        yield live


def assert_full_error(response: requests.Response, needed_at_least: int) -> tuple[float, float]:
    assert response.status_code == 507, response.text[:300]
    message = response.json()["error"]
    match = FULL.search(message)
    assert match, message
    assert "Reset" in message
    free_mb, needed_mb, reserve_mb = map(float, match.groups())
    assert float(reserve_mb) == RESERVE_MB and needed_mb >= (needed_at_least / MB) + RESERVE_MB - 0.1
    return free_mb, needed_mb


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_frame(server) -> bytes:
    with video_feed(server.url, timeout=60) as jpegs:
        return next(jpegs)


@pytest.fixture
def stored_video_and_model(server, demo_onnx, tmp_path):
    """The small disk already holding a video and the demo model, as a user left it."""
    video = write_video(tmp_path / "first.mp4", width=320, height=240, frames=20)
    assert upload(server, "/upload/video", video).status_code == 201
    assert upload(server, "/upload/model", demo_onnx).status_code == 201
    folder = server.uploads
    return {p: sha(folder / p) for p in every_file(folder)}


def raw_upload_headers(route: str, length: int) -> bytes:
    return (f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_content_length_over_the_free_space_is_507_before_a_body_byte(server, disk):
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=20) as sock:
        sock.sendall(raw_upload_headers("/upload/video", 50 * MB))  # and not one byte of the body
        raw = read_all(sock)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 507") and b"application/json" in head, raw[:300]
    message = json.loads(body)["error"]
    free_mb, needed_mb = map(float, FULL.search(message).groups()[:2])
    assert free_mb == pytest.approx(free_bytes(disk) / MB, abs=0.2) and needed_mb >= 50 + RESERVE_MB
    assert every_file(disk) == []


def test_upload_larger_than_the_disk_is_507_keeps_nothing_and_the_next_upload_works(
        server, disk, stored_video_and_model, tmp_path):
    before = stored_video_and_model
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(50 * MB))
    try:
        response = upload(server, "/upload/video", big)
    except requests.ConnectionError:
        response = None  # the server may close while the client still sends: it read none of the body
    if response is not None:
        assert_full_error(response, 50 * MB)
    folder = server.uploads
    assert {p: sha(folder / p) for p in every_file(folder)} == before  # nothing new, nothing lost
    assert every_file(disk) == [f"uploads/{p}" for p in sorted(before)]

    status = requests.get(server.url + "/api/status", timeout=10).json()
    assert status["video"]["name"] == "first.mp4" and status["model"]["name"] == demo_name()
    assert status["storage"]["reserve_bytes"] == RESERVE_MB * MB
    assert status["storage"]["free_bytes"] == pytest.approx(free_bytes(disk), abs=64 * 1024)
    sizes = {(folder / p).stat().st_ino: (folder / p).stat().st_size for p in before}  # a linked .onnx counts once
    assert status["storage"]["folder_bytes"] >= sum(sizes.values())
    assert requests.post(server.url + "/stream/start", timeout=30).status_code == 200
    assert one_frame(server).startswith(b"\xff\xd8")
    requests.post(server.url + "/stream/stop", timeout=30)

    second = write_video(tmp_path / "second.mp4", width=320, height=240, frames=10)
    assert upload(server, "/upload/video", second).status_code == 201
    assert requests.get(server.url + "/api/status", timeout=10).json()["video"]["name"] == "second.mp4"


def demo_name() -> str:
    return "shapes-yolov8n.onnx"


def test_any_wsgi_server_refuses_before_opening_a_temporary_file(disk, tmp_path, monkeypatch):
    app = create_app(config_for(tmp_path, uploads=disk / "uploads", disk_reserve_mb=RESERVE_MB))
    store = app.extensions["uploads"]
    opened = []
    monkeypatch.setattr(store, "incoming_file", lambda suffix: opened.append(suffix))
    fill(disk, leave_bytes=RESERVE_MB * MB + MB)
    response = upload(app.test_client(), "/upload/video", payload=b"\0" * 2 * MB, name="a.mp4")
    assert response.status_code == 507 and FULL.search(response.get_json()["error"])
    assert opened == []  # refused on the Content-Length, not after writing until the disk was full
    assert every_file(disk) == ["filler.bin"]


def test_a_chunked_upload_that_does_not_fit_is_507_and_keeps_nothing(server, disk, tmp_path):
    def body():  # no Content-Length: waitress cannot check before it reads, the app checks before it writes
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n\r\n"
        for _ in range(45):
            yield b"\0" * MB
        yield b"\r\n--b--\r\n"

    response = requests.post(server.url + "/upload/video", data=body(), timeout=60,
                             headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_full_error(response, 45 * MB)
    assert every_file(disk) == []


def test_disk_filling_during_the_write_is_507_removes_the_temporary_file_and_keeps_the_old_video(
        server, disk, stored_video_and_model, tmp_path, monkeypatch):
    before = stored_video_and_model
    store = server.app.extensions["uploads"]
    opened = store.incoming_file

    def open_then_fill(suffix):  # the check passed; now another program takes the space
        handle = opened(suffix)
        fill(disk, leave_bytes=256 * 1024)
        return handle

    monkeypatch.setattr(store, "incoming_file", open_then_fill)
    video = write_video(tmp_path / "next.avi", width=640, height=480, frames=60)  # MJPG: larger than what is left
    assert video.stat().st_size > 2 * 256 * 1024
    response = upload(server, "/upload/video", video)
    assert_full_error(response, video.stat().st_size)
    assert {p: sha(server.uploads / p) for p in every_file(server.uploads)} == before
    assert not list(server.uploads.glob(".upload-*"))

    monkeypatch.setattr(store, "incoming_file", opened)
    (disk / "filler.bin").unlink()
    assert requests.post(server.url + "/stream/start", timeout=30).status_code == 200
    assert one_frame(server).startswith(b"\xff\xd8")  # the old video still streams
    requests.post(server.url + "/stream/stop", timeout=30)
    assert upload(server, "/upload/video", video).status_code == 201


# The stored model keeps its ONNX and its NCNN copy (12 MB each for the demo): a new .pt needs room beside them.
@pytest.mark.parametrize("disk", [64], indirect=True)
def test_pt_upload_whose_conversion_does_not_fit_is_507_and_keeps_the_old_model(
        server, disk, stored_video_and_model, demo_pt, monkeypatch):
    before = stored_video_and_model
    started = []
    convert_checkpoint = convert.convert_checkpoint
    monkeypatch.setattr(convert, "convert_checkpoint",
                        lambda *a, **k: started.append(a) or convert_checkpoint(*a, **k))
    pt_size = demo_pt.stat().st_size
    # Room for the .pt itself (and the reserve), not for its ONNX conversion (twice the .pt).
    fill(disk, leave_bytes=pt_size + RESERVE_MB * MB + 2 * MB)
    response = upload(server, "/upload/model", demo_pt)
    assert_full_error(response, convert.onnx_bytes_for(demo_pt))
    assert started == []  # refused before converting, not when the disk filled
    assert {p: sha(server.uploads / p) for p in every_file(server.uploads)} == before
    status = requests.get(server.url + "/api/status", timeout=10).json()
    assert status["model"]["name"] == demo_name() and status["job"] is None

    (disk / "filler.bin").unlink()
    assert upload(server, "/upload/model", demo_pt).status_code == 201
    assert len(started) == 1


def test_conversion_hitting_enospc_while_writing_leaves_no_partial_file(disk, demo_pt):
    cache = disk / "cache"
    space = DiskSpace(disk, 0)

    def fill_before_writing(stage, progress, message):
        if stage == "checking":  # the graph is built; the write comes next
            fill(disk, leave_bytes=1 * MB)

    with pytest.raises(InsufficientStorage, match="not enough free space"):
        convert.convert_cached(demo_pt, cache, on_progress=fill_before_writing, space=space)
    assert every_file(cache) == []
    (disk / "filler.bin").unlink()
    assert convert.convert_cached(demo_pt, cache, space=space).onnx_path.is_file()


@pytest.fixture
def model_disk(tmp_path):
    """A disk with room for an int8 tuning of the demo model (its work folder takes a few times the model)."""
    with mounted_tmpfs(tmp_path / "model-disk", 96) as mounted:
        yield mounted


def test_int8_build_without_room_does_not_start_and_says_why(model_disk, demo_onnx, tmp_path):
    disk = model_disk
    fp32 = disk / "model.onnx"
    fp32.write_bytes(demo_onnx.read_bytes())
    fill(disk, leave_bytes=fp32.stat().st_size * 2)  # far less than a tuning's work folder
    jobs = JobBoard()
    int8 = EngineTiming(jobs, ["u8s8-pc"], space=DiskSpace(disk, RESERVE_MB * MB))
    video = write_video(tmp_path / "calib.mp4", width=320, height=240, frames=10)
    int8.start(fp32, lambda count: sample_frames(video, count), TimingRequest(320, 0.9, 1))
    assert not int8.building() and jobs.current() is None
    assert int8.error.startswith("the engine timing did not start: not enough free space")
    assert every_file(disk) == ["filler.bin", "model.onnx"]


@pytest.mark.slow  # a real int8 tuning, cut short
def test_int8_build_that_fills_the_disk_fails_cleanly(model_disk, demo_onnx, tmp_path):
    disk = model_disk
    fp32 = disk / "model.onnx"
    fp32.write_bytes(demo_onnx.read_bytes())
    filled = threading.Event()

    class FillingJobs(JobBoard):
        def update(self, kind, stage, progress, message=""):
            super().update(kind, stage, progress, message)
            if stage == "calibrating" and not filled.is_set():  # the work folder is being written
                filled.set()
                fill(disk, leave_bytes=256 * 1024)

    jobs = FillingJobs()
    int8 = EngineTiming(jobs, ["u8s8-pc"], space=DiskSpace(disk, 0))
    video = write_video(tmp_path / "calib.mp4", width=320, height=240, frames=100)
    int8.start(fp32, lambda count: sample_frames(video, count), TimingRequest(320, 0.9, 1))
    assert wait_for(lambda: not int8.building(), timeout=600)
    assert filled.is_set()
    assert int8.error and int8.error.startswith("the engine timing failed: not enough free space"), int8.error
    assert int8.ready(fp32) is None and jobs.current() is None
    assert every_file(disk) == ["filler.bin", "model.onnx"]  # no candidate, report or work folder
    assert tuning.cached_tuning(fp32) is None


def test_an_upload_spooled_on_the_same_disk_counts_twice(disk):
    spool_disk = DiskSpace(Path(tempfile.gettempdir()), 0)  # waitress spools big bodies here, then the app copies
    assert upload_footprint(spool_disk, 10 * MB, 512 * 1024) == 20 * MB
    assert upload_footprint(spool_disk, 100 * 1024, 512 * 1024) == 100 * 1024  # kept in memory by waitress
    assert upload_footprint(DiskSpace(disk, 0), 10 * MB, 512 * 1024) == 10 * MB  # another disk: the copy only


def test_an_event_that_does_not_fit_is_refused_whole_and_the_next_one_that_fits_is_saved(disk):
    store = EventStore(disk / "uploads" / "events", space=DiskSpace(disk, RESERVE_MB * MB))
    now, box = time.time(), (10.0, 10.0, 50.0, 40.0)  # a recent event: retention by age keeps it

    def record(event_id: int) -> EventRecord:
        return EventRecord(event_id, "circle", 0, 1, "clip.mp4", now, now + 1, now + 1, 0, 1, 0.9, box, 5)

    first = store.new_id()
    assert store.save(record(first), b"\xff\xd8" + b"s" * 1000, b"\xff\xd8crop", store.generation)
    fill(disk, leave_bytes=RESERVE_MB * MB + 64 * 1024)
    second = store.new_id()
    with pytest.raises(InsufficientStorage, match="not enough free space"):
        store.save(record(second), b"\xff\xd8" + b"s" * (512 * 1024), b"\xff\xd8crop", store.generation)
    media = sorted(p.name for p in store.media.iterdir())
    assert media == [f"{first}-crop.jpg", f"{first}-snapshot.jpg"]  # nothing of the refused one, no temporary file
    (disk / "filler.bin").unlink()
    assert store.save(record(second), b"\xff\xd8" + b"s" * (512 * 1024), b"\xff\xd8crop", store.generation)
    assert {e["id"] for e in store.query(EventQuery())} == {first, second}
