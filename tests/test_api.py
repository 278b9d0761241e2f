"""Every row of the HTTP interface, success and failure, through Flask's test client."""

from __future__ import annotations

import shutil

import pytest

from harness.client import upload
from server import create_app
from server.config import Config


def visible_files(root):
    """The uploads and derived files (events, which a running stream may add at any moment, left out)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                  and p.relative_to(root).parts[0] != "events")


@pytest.fixture
def loaded(client, make_video, demo_onnx):
    """A client with a 640x480 video and the YOLOv8n ONNX uploaded."""
    assert upload(client, "/upload/video", make_video("clip.mp4")).status_code == 201
    assert upload(client, "/upload/model", demo_onnx).status_code == 201
    return client


def test_index_serves_the_page(client):
    response = client.get("/")
    assert response.status_code == 200 and b"<html" in response.data.lower()


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_upload_video_describes_it(client, make_video, suffix):
    path = make_video("clip" + suffix, width=320, height=240, fps=12, frames=30)
    response = upload(client, "/upload/video", path)
    assert response.status_code == 201
    video = response.get_json()["video"]
    assert video["name"] == path.name
    assert (video["width"], video["height"], video["frames"]) == (320, 240, 30)
    assert video["fps"] == pytest.approx(12, abs=0.01)
    assert video["size"] == path.stat().st_size


def test_upload_video_rejects_unreadable_and_wrong_extension(client, app, make_video):
    uploads = app.extensions["uploads"].root
    garbage = upload(client, "/upload/video", payload=b"not a video at all" * 100, name="movie.mp4")
    assert garbage.status_code == 400 and "video" in garbage.get_json()["error"]
    wrong = upload(client, "/upload/video", make_video("clip.mp4"), name="clip.txt")
    assert wrong.status_code == 400 and ".txt" in wrong.get_json()["error"]
    missing = client.post("/upload/video", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "file" in missing.get_json()["error"]
    assert visible_files(uploads) == []


def test_upload_too_large_is_413_and_keeps_nothing(tmp_path, make_video):
    app = create_app(Config(uploads=tmp_path / "small", host="127.0.0.1", max_video_mb=1, max_model_mb=1))
    response = upload(app.test_client(), "/upload/video", payload=b"\0" * (2 * 1024 * 1024), name="big.mp4")
    assert response.status_code == 413 and "too large" in response.get_json()["error"]
    assert visible_files(tmp_path / "small") == []


def test_new_video_replaces_the_previous(client, app, make_video):
    upload(client, "/upload/video", make_video("first.mp4"))
    upload(client, "/upload/video", make_video("second.avi"))
    assert visible_files(app.extensions["uploads"].root) == ["video/second.avi"]


def test_upload_onnx_model(client, yolov8n_onnx):
    response = upload(client, "/upload/model", yolov8n_onnx)
    assert response.status_code == 201
    model = response.get_json()["model"]
    assert (model["name"], model["family"], model["task"]) == ("yolov8n.onnx", "yolov8", "detect")
    assert len(model["classes"]) == 80 and model["imgsz"] == 640


def test_upload_pt_converts_and_caches_by_sha(client, app, demo_pt):
    response = upload(client, "/upload/model", demo_pt)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["model"]["family"] == "yolov8"
    files = visible_files(app.extensions["uploads"].root)
    assert "model/shapes-yolov8n.pt" in files
    cached = [f for f in files if f.startswith("cache/") and f.endswith(".onnx")]
    assert len(cached) == 1
    cache_file = app.extensions["uploads"].root / cached[0]
    mtime = cache_file.stat().st_mtime_ns
    assert upload(client, "/upload/model", demo_pt).status_code == 201
    assert cache_file.stat().st_mtime_ns == mtime  # reused, not converted again


@pytest.mark.parametrize(
    "name, found",
    [
        ("yolov5nu.pt", "YOLOv5"),
        ("yolo11n.pt", "YOLO11"),
        ("yolov10n.pt", "YOLOv10"),
        ("yolov8n-seg.pt", "segment"),
        ("yolo11n.onnx", "YOLO11"),
        ("yolov5nu.onnx", "YOLOv5"),
    ],
)
def test_upload_model_refuses_other_families(client, app, model_zoo, name, found):
    response = upload(client, "/upload/model", model_zoo / name)
    assert response.status_code == 400
    assert found.lower() in response.get_json()["error"].lower()
    assert visible_files(app.extensions["uploads"].root) == []


def test_upload_model_refuses_random_bytes_and_other_extensions(client, app):
    for name in ("weights.pt", "weights.onnx"):
        response = upload(client, "/upload/model", payload=b"\x00garbage" * 64, name=name)
        assert response.status_code == 400 and response.get_json()["error"]
    response = upload(client, "/upload/model", payload=b"abc", name="weights.h5")
    assert response.status_code == 400 and ".h5" in response.get_json()["error"]
    assert visible_files(app.extensions["uploads"].root) == []


def test_status_shape(client):
    status = client.get("/api/status").get_json()
    assert {"streaming", "video", "model", "settings", "stats"} <= set(status)
    assert status["streaming"] is False and status["video"] is None and status["model"] is None
    stats = status["stats"]
    assert {"fps", "frames", "viewers", "detections", "latency_ms"} <= set(stats)
    stages = {"decode", "preprocess", "inference", "postprocess", "draw", "encode", "total"}
    assert stages <= set(stats["latency_ms"])


def test_status_names_the_stages_the_latencies_are_kept_for(client):
    """The page draws its latency bar from status["stages"]: every stage has a latency and nothing else does."""
    status = client.get("/api/status").get_json()
    assert status["stages"] and set(status["stages"]) == set(status["stats"]["latency_ms"]) - {"total"}


def test_options_ranges_are_exactly_what_settings_accept(client):
    """The page's sliders span options' ranges: both ends are accepted (low excluded where above_low says so)."""
    options = client.get("/api/status").get_json()["options"]
    assert set(options["above_low"]) == {"conf", "iou", "min_agreement"}
    for key in ("conf", "iou", "min_agreement", "detect_every", "threads", "jpeg_quality", "output_width"):
        low, high = options[key]
        if key in options["above_low"]:
            inside, outside = [low + 0.001, high], [low, high + 0.001]
        else:
            inside, outside = [low, high], [low - 1, high + 1]
        for value in inside:
            assert client.post("/api/settings", json={key: value}).status_code == 200, (key, value)
        for value in outside:
            assert client.post("/api/settings", json={key: value}).status_code == 400, (key, value)


def test_settings_accepts_a_subset_and_returns_all(client):
    response = client.post("/api/settings", json={"conf": 0.4, "loop": False})
    assert response.status_code == 200
    settings = response.get_json()
    assert settings["conf"] == 0.4 and settings["loop"] is False
    assert {"conf", "iou", "imgsz", "realtime", "loop"} <= set(settings)
    assert client.get("/api/status").get_json()["settings"] == settings


@pytest.mark.parametrize(
    "change",
    [{"conf": 1.5}, {"conf": 0}, {"iou": -0.1}, {"imgsz": 333}, {"realtime": "yes"}, {"loop": 1}, {"colour": "red"}],
)
def test_settings_rejects_bad_values(client, change):
    response = client.post("/api/settings", json=change)
    assert response.status_code == 400
    assert next(iter(change)) in response.get_json()["error"]


def test_detect_every_takes_auto_and_interpolate_its_choices_both_offered_in_options(client):
    options = client.get("/api/status").get_json()["options"]
    assert options["detect_every_auto"] == "auto" and options["interpolate"] == ["files", "always", "never"]
    assert client.get("/api/status").get_json()["settings"]["interpolate"] == "files"
    for value in options["interpolate"]:
        assert client.post("/api/settings", json={"interpolate": value}).get_json()["interpolate"] == value
    assert client.post("/api/settings", json={"detect_every": "auto"}).get_json()["detect_every"] == "auto"
    for change in ({"detect_every": "fast"}, {"detect_every": "3"}, {"detect_every": True}, {"interpolate": True},
                   {"interpolate": "sometimes"}):
        response = client.post("/api/settings", json=change)
        assert response.status_code == 400 and next(iter(change)) in response.get_json()["error"], change
    keyframes = client.get("/api/status").get_json()["stats"]["keyframes"]
    assert keyframes == {"per_frame": 0.0, "per_s": 0.0, "interpolating": False, "added_delay_ms": 0.0}


def test_settings_rejects_non_json(client):
    response = client.post("/api/settings", data="conf=0.5", content_type="text/plain")
    assert response.status_code == 400 and response.get_json()["error"]


def test_start_needs_video_and_model(client, make_video):
    response = client.post("/stream/start")
    assert response.status_code == 409 and "video" in response.get_json()["error"]
    upload(client, "/upload/video", make_video())
    response = client.post("/stream/start")
    assert response.status_code == 409 and "model" in response.get_json()["error"]


def test_video_feed_is_409_when_not_streaming(client):
    response = client.get("/video_feed")
    assert response.status_code == 409 and response.get_json()["error"]


def test_stream_start_feed_stop(loaded):
    assert loaded.post("/stream/start").get_json() == {"streaming": True}
    response = loaded.get("/video_feed", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "multipart/x-mixed-replace"
    assert response.headers["Content-Type"].endswith("boundary=frame")
    first = next(response.response)
    assert first.startswith(b"--frame\r\nContent-Type: image/jpeg") and b"\xff\xd8" in first
    assert loaded.get("/api/status").get_json()["streaming"] is True
    assert loaded.post("/stream/stop").get_json() == {"streaming": False}
    # The viewer's generator ends with the stream, after at most the frame published just before the stop.
    assert len(list(response.response)) <= 1
    response.close()
    assert loaded.get("/api/status").get_json()["streaming"] is False


def test_uploads_and_reset_refused_while_streaming(loaded, app, make_video, demo_onnx):
    uploads = app.extensions["uploads"].root
    before = visible_files(uploads)
    loaded.post("/stream/start")
    assert upload(loaded, "/upload/video", make_video("other.mp4")).status_code == 409
    assert upload(loaded, "/upload/model", demo_onnx).status_code == 409
    refused = loaded.post("/reset")
    assert refused.status_code == 409 and "stop" in refused.get_json()["error"]
    assert visible_files(uploads) == before
    loaded.post("/stream/stop")
    deleted = loaded.post("/reset").get_json()["deleted"]
    assert sorted(deleted) == before
    assert visible_files(uploads) == [] and list(uploads.iterdir()) == []
    status = loaded.get("/api/status").get_json()
    assert status["video"] is None and status["model"] is None


def test_loop_false_ends_the_stream(client, make_video, demo_onnx):
    upload(client, "/upload/video", make_video(frames=8))
    upload(client, "/upload/model", demo_onnx)
    client.post("/api/settings", json={"loop": False, "realtime": False, "imgsz": 320})
    client.post("/stream/start")
    response = client.get("/video_feed", buffered=False)
    parts = list(response.response)  # ends by itself when the video does
    assert 1 <= len(parts) <= 8
    assert client.get("/api/status").get_json()["stats"]["frames"] == 8
    assert client.get("/api/status").get_json()["streaming"] is False


def test_reset_deletes_a_real_uploads_dir_but_keeps_gitkeep(tmp_path, make_video):
    root = tmp_path / "uploads"
    root.mkdir()
    (root / ".gitkeep").touch()
    app = create_app(Config(uploads=root, host="127.0.0.1"))
    client = app.test_client()
    upload(client, "/upload/video", make_video())
    assert client.post("/reset").get_json()["deleted"] == ["video/clip.mp4"]
    assert [p.name for p in root.iterdir()] == [".gitkeep"]
    shutil.rmtree(root)
