"""NCNN models written by the project's own code give ONNX Runtime's detections; the engine setting and its files.

Equality (tests/engine_equality.py): NCNN fp32 gives the same detections after NMS as ONNX Runtime fp32 and raw
outputs within 1e-3 relative; NCNN fp16 boxes stay within 1 px at agreement >= 0.98 (the int8 verdict's agreement).
The demo model is compared here quickly; every converter layout, the zoo's exports and the real checkpoints in the
slow tests.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from server.demo.video import render_frames
from server.models.ncnn import ncnn_model_for
from server.vision.engines.ncnn_engine import NcnnFiles
from tests.engine_equality import compare_engines

DEMO_FRAMES = 6


def demo_frames() -> list[np.ndarray]:
    return list(render_frames(seconds=DEMO_FRAMES / 2, fps=2))


def test_the_demo_model_on_ncnn_gives_onnxruntimes_detections(demo_onnx, tmp_path):
    result = compare_engines(demo_onnx, demo_frames(), (320, 640), tmp_path)
    assert result.detections > 20  # the shapes are found: real boxes were compared, not empty lists
    print(f"\ndemo: {result}")


def test_the_ncnn_files_sit_beside_the_onnx_and_are_reused(demo_onnx, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    shutil.copyfile(demo_onnx, onnx_path)
    first = ncnn_model_for(onnx_path)
    assert first.files == NcnnFiles.beside(onnx_path) and first.seconds > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.ncnn.bin", "model.ncnn.json", "model.ncnn.param", "model.onnx"]  # no partial file left
    assert ncnn_model_for(onnx_path).seconds == 0  # from the cache


def test_a_changed_onnx_or_a_half_written_set_is_rewritten(demo_onnx, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    shutil.copyfile(demo_onnx, onnx_path)
    files = ncnn_model_for(onnx_path).files
    files.head.unlink()  # as if the writer died before its last rename
    assert ncnn_model_for(onnx_path).seconds > 0
    head = json.loads(files.head.read_text())
    head["source"]["size"] += 1  # another ONNX under the same name
    files.head.write_text(json.dumps(head))
    assert ncnn_model_for(onnx_path).seconds > 0


def untranslatable(demo_onnx, path):
    """The demo model with one SiLU gate made a HardSigmoid: ONNX Runtime runs it, the NCNN writer has no such op."""
    model = onnx.load(str(demo_onnx))
    gate = next(node for node in model.graph.node if node.op_type == "Sigmoid")
    gate.op_type = "HardSigmoid"
    onnx.save(model, str(path))
    return path


def test_an_op_without_translation_keeps_onnx_runtime_and_says_why(demo_onnx, tmp_path):
    build = ncnn_model_for(untranslatable(demo_onnx, tmp_path / "odd.onnx"))
    assert build.files is None
    assert "HardSigmoid" in build.reason and "NCNN is not offered" in build.reason
    assert not list(tmp_path.glob("*.ncnn.*"))


# --- over HTTP -------------------------------------------------------------------------------------------------------
def upload(client, route, path, name=None):
    with open(path, "rb") as handle:
        return client.post(route, data={"file": (handle, name or path.name)}, content_type="multipart/form-data")


def test_ncnn_fp16_streams_and_the_combinations_the_model_lacks_are_400(client, make_video, demo_onnx):
    assert upload(client, "/upload/video", make_video("clip.mp4")).status_code == 201
    model = upload(client, "/upload/model", demo_onnx).get_json()["model"]
    assert model["engines"] == {"onnxruntime": ["fp32", "int8"], "ncnn": ["fp32", "fp16"]}
    assert model["ncnn_unavailable"] is None
    for changes, words in (({"precision": "fp16"}, "not offered with engine onnxruntime"),
                           ({"engine": "ncnn", "precision": "int8"}, "not offered with engine ncnn"),
                           ({"engine": "tensorrt"}, "engine must be one of")):
        response = client.post("/api/settings", json=changes)
        assert response.status_code == 400 and words in response.get_json()["error"], changes
    assert client.post("/api/settings", json={"engine": "ncnn", "precision": "fp16"}).status_code == 200
    assert client.post("/stream/start").status_code == 200
    feed = client.get("/video_feed", buffered=False)
    assert next(feed.response).startswith(b"--frame")
    status = client.get("/api/status").get_json()
    assert status["precision"]["engine"] == "ncnn" and status["precision"]["active"] == "fp16"
    client.post("/stream/stop")
    feed.close()


def test_a_model_ncnn_cannot_run_offers_onnx_runtime_only_and_says_why(client, demo_onnx, tmp_path):
    model = upload(client, "/upload/model", untranslatable(demo_onnx, tmp_path / "odd.onnx")).get_json()["model"]
    assert model["engines"] == {"onnxruntime": ["fp32", "int8"]}
    assert "HardSigmoid" in model["ncnn_unavailable"]
    response = client.post("/api/settings", json={"engine": "ncnn"})
    assert response.status_code == 400 and "HardSigmoid" in response.get_json()["error"]
    assert client.get("/api/status").get_json()["options"]["engine"] == ["onnxruntime"]


@pytest.mark.parametrize("weights", ["onnx", "pt"])
def test_reset_deletes_the_ncnn_files(client, demo_onnx, demo_pt, weights, app):
    assert upload(client, "/upload/model", demo_onnx if weights == "onnx" else demo_pt).status_code == 201
    uploads = app.extensions["uploads"].root
    written = sorted(p.relative_to(uploads).as_posix() for p in uploads.rglob("*.ncnn.*"))
    assert [name.rsplit(".", 1)[1] for name in written] == ["bin", "json", "param"]
    deleted = client.post("/reset").get_json()["deleted"]
    assert set(written) <= set(deleted)
    assert not list(uploads.rglob("*.ncnn.*"))
