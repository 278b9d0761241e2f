"""int8 through the HTTP interface: tuning runs in the background with progress, then the stream uses it."""

from __future__ import annotations

import pytest

from harness.client import upload
from harness.waiting import status_when
from server import create_app
from server.config import Config
from server.files import sha256_of


@pytest.mark.slow
def test_int8_is_tuned_in_the_background_then_used(tmp_path, make_video, demo_onnx, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # tuning must write nothing into the server's working directory
    app = create_app(Config(uploads=tmp_path / "up", host="127.0.0.1", int8_recipes="u8s8-pc-rr", engine="onnxruntime"))
    client = app.test_client()
    upload(client, "/upload/video", make_video(frames=30))
    upload(client, "/upload/model", demo_onnx)
    assert client.post("/api/settings", json={"precision": "int8", "imgsz": 320}).status_code == 200
    seen_jobs = []
    status = status_when(
        client, lambda s: seen_jobs.append(s["job"]) or s["precision"]["active"] == "int8" and s["job"] is None
    )
    assert any(job and job["kind"] == "engine-timing" for job in seen_jobs), "the timing's progress was never shown"
    table = status["precision"]["timing"]
    assert status["precision"]["int8"] == table  # the former name, kept for one release
    recipes = [row["recipe"] for row in table["rows"] if row["engine"] == "onnxruntime" and row["precision"] == "int8"]
    assert table["chosen"] == "u8s8-pc-rr" and recipes == ["u8s8-pc-rr"]
    engine_onnx = sha256_of(demo_onnx)  # the ONNX the engines run: cache/<sha256>.onnx, a link to the upload
    cached = [p.name for p in (tmp_path / "up" / "cache").iterdir()]
    assert f"{engine_onnx}.int8.u8s8-pc-rr.onnx" in cached and f"{engine_onnx}.int8.json" in cached  # next to it
    assert list(workdir.iterdir()) == []

    client.post("/api/settings", json={"realtime": False})
    client.post("/stream/start")
    feed = client.get("/video_feed", buffered=False)
    next(feed.response)
    runner = app.extensions["detection"].stream.runner
    assert runner.pipeline.precision == "int8"
    client.post("/stream/stop")
    feed.close()
    assert f"cache/{engine_onnx}.int8.u8s8-pc-rr.onnx" in client.post("/reset").get_json()["deleted"]


def test_unknown_recipe_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="unknown int8 recipe"):
        create_app(Config(uploads=tmp_path, int8_recipes="fastest"))
