"""The export job on a real server: files that decode, detections equal to the stream's, cancel, 409s, reset, full disk."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import cv2
import pytest
import requests

from harness.client import upload
from harness.waiting import wait_for
from server.models.runtime import ModelRuntime
from server.vision.pipeline import FramePipeline
from server.vision.settings import Settings
from server.vision.sources import FileChoice
from server.vision.stream import StreamRunner
from server.vision.tracker import Tracker
from tests.support.helpers import config_for, serving, write_video
from tests.support.small_disk import MB, every_file, fill, mounted_tmpfs

IMGSZ = 320


def export_status(server) -> dict:
    return requests.get(server.url + "/api/export", timeout=10).json()["export"]


def loaded(server, video: Path, model: Path) -> None:
    assert upload(server, "/upload/video", video).status_code == 201
    assert upload(server, "/upload/model", model).status_code == 201
    assert requests.post(server.url + "/api/settings", json={"imgsz": IMGSZ}, timeout=10).status_code == 200


def finished(server, timeout: float = 600) -> dict:
    assert wait_for(lambda: export_status(server)["state"] != "running", timeout=timeout, interval=0.5)
    return export_status(server)


def export_files(server) -> list[str]:
    return every_file(server.uploads / "export") if (server.uploads / "export").exists() else []


def stream_detections(video: Path, model: Path, settings: Settings, classes: list[str]) -> dict[int, list[tuple]]:
    """What the stream's producer finds on every frame of video (its publish tap), flat out, no loop."""
    pipeline = FramePipeline(ModelRuntime(model, lambda: None).detector_for, classes, tracker_factory=Tracker)
    seen: dict[int, list[tuple]] = {}
    ended = []

    def tap(detected, result, published):
        d = result.detections
        seen[detected.frame.position] = [
            (int(d.class_ids[i]), float(d.scores[i]), *map(float, d.boxes[i]),
             None if d.track_ids is None else int(d.track_ids[i])) for i in range(len(d))]

    flat_out = dataclasses.replace(settings, realtime=False, loop=False)
    runner = StreamRunner(FileChoice(video).open, pipeline, lambda: flat_out, ended.append, on_publish=tap)
    runner.start()
    assert wait_for(lambda: ended, timeout=600)
    assert ended == [None]
    return seen


@pytest.mark.slow  # exports a video
def test_export_writes_a_video_and_the_streams_detections(serve, demo_onnx, tmp_path):
    server = serve()
    video = write_video(tmp_path / "clip.mp4", width=320, height=240, fps=15, frames=40)
    loaded(server, video, demo_onnx)
    started = requests.post(server.url + "/api/export", timeout=30)
    assert started.status_code == 202 and started.json()["export"]["state"] == "running"
    done = finished(server)
    assert done["state"] == "done", done
    assert done["frames"] == done["frames_done"] == 40 and done["fps"] > 0 and done["codec"] == "VP8 (WebM)"

    video_response = requests.get(server.url + done["video"]["url"], timeout=30)
    assert video_response.status_code == 200 and video_response.headers["Content-Type"] == "video/webm"
    assert 'filename=clip-annotated.webm' in video_response.headers["Content-Disposition"]
    downloaded = tmp_path / "downloaded.webm"
    downloaded.write_bytes(video_response.content)
    assert len(video_response.content) == done["video"]["bytes"]
    capture = cv2.VideoCapture(str(downloaded))
    frames = 0
    while (read := capture.read())[0]:
        assert read[1].shape == (240, 320, 3)
        frames += 1
    assert frames == 40 and capture.get(cv2.CAP_PROP_FOURCC) and int(capture.get(cv2.CAP_PROP_FPS)) == 15

    table = requests.get(server.url + done["detections"]["url"], timeout=30)
    assert table.status_code == 200 and table.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert len(rows) == done["rows"] > 0
    assert list(rows[0]) == ["frame", "time_s", "class_id", "class", "score", "x1", "y1", "x2", "y2", "track_id",
                             "engine", "precision"]

    assert_stream_shows_the_exported_boxes(server, demo_onnx, done, rows, fps=15)


def assert_stream_shows_the_exported_boxes(server, model: Path, done: dict, rows: list[dict], fps: float) -> None:
    """The export's CSV rows are the boxes the stream's producer publishes on each frame with the same settings."""
    settings = Settings(**{k: tuple(v) if k == "classes" and v else v for k, v in done["settings"].items()})
    classes = requests.get(server.url + "/api/status", timeout=10).json()["model"]["classes"]
    stream = stream_detections(server.uploads / "video" / "clip.mp4", model, settings, classes)
    assert sorted(stream) == list(range(done["frames"]))
    by_frame: dict[int, list[dict]] = {}
    for row in rows:
        by_frame.setdefault(int(row["frame"]), []).append(row)
    assert sum(len(boxes) for boxes in stream.values()) == len(rows)
    for frame, boxes in stream.items():
        exported = by_frame.get(frame, [])
        assert len(exported) == len(boxes), frame
        for row, (class_id, score, x1, y1, x2, y2, track) in zip(exported, boxes):
            assert int(row["class_id"]) == class_id and row["class"] == classes[class_id]
            assert float(row["score"]) == pytest.approx(score, abs=1e-3)
            assert [float(row[k]) for k in ("x1", "y1", "x2", "y2")] == pytest.approx([x1, y1, x2, y2], abs=0.05)
            assert row["track_id"] == ("" if track is None else str(track))
            assert float(row["time_s"]) == pytest.approx(frame / fps, abs=1e-3)


@pytest.mark.slow  # exports a video
@pytest.mark.parametrize("detect_every", [3, "auto"])
def test_an_export_between_keyframes_has_the_interpolated_boxes_the_stream_shows(serve, demo_onnx, tmp_path,
                                                                                 detect_every):
    server = serve()
    video = write_video(tmp_path / "clip.mp4", width=320, height=240, fps=15, frames=31)
    loaded(server, video, demo_onnx)
    changed = requests.post(server.url + "/api/settings", json={"detect_every": detect_every}, timeout=10)
    assert changed.status_code == 200 and changed.json()["interpolate"] == "files"
    assert requests.post(server.url + "/api/export", timeout=30).status_code == 202
    done = finished(server)
    assert done["state"] == "done" and done["frames_done"] == 31, done
    rows = list(csv.DictReader(io.StringIO(requests.get(server.url + done["detections"]["url"], timeout=30).text)))
    assert {int(row["frame"]) for row in rows} == set(range(31)), "every frame has its boxes, also between keyframes"
    assert_stream_shows_the_exported_boxes(server, demo_onnx, done, rows, fps=15)


@pytest.mark.slow  # exports a video
def test_cancel_keeps_nothing_and_a_second_export_or_a_stream_is_409_meanwhile(serve, demo_onnx, tmp_path):
    server = serve()
    loaded(server, write_video(tmp_path / "long.mp4", width=320, height=240, frames=600), demo_onnx)
    assert requests.post(server.url + "/api/export", timeout=30).status_code == 202
    assert wait_for(lambda: export_status(server)["frames_done"] >= 25, timeout=300)
    running = export_status(server)
    assert running["state"] == "running" and 0 < running["progress"] < 1

    again = requests.post(server.url + "/api/export", timeout=30)
    assert again.status_code == 409 and "export" in again.json()["error"]
    stream = requests.post(server.url + "/stream/start", timeout=30)
    assert stream.status_code == 409 and "export" in stream.json()["error"]
    refused = upload(server, "/upload/video", write_video(tmp_path / "other.mp4", frames=5))
    assert refused.status_code == 409
    status_job = requests.get(server.url + "/api/status", timeout=10).json()["job"]
    assert status_job["kind"] == "export" and status_job["progress"] > 0

    cancelled = requests.delete(server.url + "/api/export", timeout=60)
    assert cancelled.status_code == 200 and cancelled.json()["export"]["state"] == "cancelled"
    assert export_files(server) == []  # no partial video or detections file, hidden or not
    assert requests.get(server.url + "/api/export/video", timeout=10).status_code == 404
    assert requests.get(server.url + "/api/status", timeout=10).json()["job"] is None
    assert requests.post(server.url + "/stream/start", timeout=30).status_code == 200
    busy = requests.post(server.url + "/api/export", timeout=30)
    assert busy.status_code == 409 and "streaming" in busy.json()["error"]
    requests.post(server.url + "/stream/stop", timeout=30)


def test_reset_deletes_the_export(serve, demo_onnx, tmp_path):
    server = serve()
    loaded(server, write_video(tmp_path / "clip.mp4", width=320, height=240, frames=10), demo_onnx)
    assert requests.post(server.url + "/api/export", timeout=30).status_code == 202
    assert finished(server)["state"] == "done"
    assert export_files(server) == ["annotated.webm", "detections.csv", "export.json"]
    deleted = requests.post(server.url + "/reset", timeout=30).json()["deleted"]
    assert {"export/annotated.webm", "export/detections.csv", "export/export.json"} <= set(deleted)
    assert export_files(server) == [] and export_status(server)["state"] == "idle"
    assert requests.get(server.url + "/api/export/detections", timeout=10).status_code == 404


def test_a_finished_export_survives_a_restart(tmp_path, demo_onnx):
    config = config_for(tmp_path)
    with serving(config) as server:
        loaded(server, write_video(tmp_path / "clip.mp4", width=320, height=240, frames=10), demo_onnx)
        requests.post(server.url + "/api/export", timeout=30)
        first = finished(server)
    with serving(config) as server:
        again = export_status(server)
        assert again["state"] == "done" and again["rows"] == first["rows"]
        assert requests.get(server.url + "/api/export/video", timeout=30).content[:4] == b"\x1a\x45\xdf\xa3"


@pytest.fixture
def disk(tmp_path):
    with mounted_tmpfs(tmp_path / "disk", 40) as mounted:
        yield mounted


@pytest.mark.slow  # exports a video
def test_export_on_a_disk_without_room_is_507_and_a_disk_filling_mid_export_fails_it_cleanly(disk, tmp_path,
                                                                                              demo_onnx):
    config = config_for(tmp_path, uploads=disk / "uploads", disk_reserve_mb=2)
    with serving(config) as server:
        loaded(server, write_video(tmp_path / "clip.mp4", width=320, height=240, frames=400), demo_onnx)
        filler = fill(disk, leave_bytes=2 * MB + 64 * 1024)
        refused = requests.post(server.url + "/api/export", timeout=30)
        assert refused.status_code == 507 and "not enough free space" in refused.json()["error"]
        assert export_files(server) == [] and export_status(server)["state"] == "idle"

        filler.unlink()
        assert requests.post(server.url + "/api/export", timeout=30).status_code == 202
        assert wait_for(lambda: export_status(server)["frames_done"] >= 25, timeout=300)
        fill(disk, leave_bytes=2 * MB + 64 * 1024)  # another program takes the space mid-export
        failed = finished(server)
        assert failed["state"] == "failed" and failed["frames_done"] < 400
        assert failed["error"].startswith("export failed: not enough free space"), failed["error"]
        assert export_files(server) == []  # the partial video and detections file are gone
        assert requests.get(server.url + "/api/status", timeout=10).json()["video"]["name"] == "clip.mp4"


@pytest.mark.parametrize("method,path", [("POST", "/api/export"), ("GET", "/api/export"), ("DELETE", "/api/export"),
                                         ("POST", "/api/export/cancel"), ("GET", "/api/export/video"),
                                         ("GET", "/api/export/detections")])
def test_export_routes_need_the_credential_and_refuse_cross_site_requests(serve, method, path):
    server = serve(password="export-pw")
    assert requests.request(method, server.url + path, timeout=10).status_code == 401
    signed_in = requests.request(method, server.url + path, auth=("any", "export-pw"), timeout=10)
    assert signed_in.status_code in (200, 404, 409)  # 409: nothing uploaded; 404: nothing exported yet
    if method != "GET":
        forged = requests.request(method, server.url + path, auth=("any", "export-pw"), timeout=10,
                                  headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403 and "cross-site" in forged.json()["error"]
