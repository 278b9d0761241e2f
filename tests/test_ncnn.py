"""NCNN models written by the project's own code give ONNX Runtime's detections; the engine setting and its files.

Equality (tests/support/engine_equality.py): NCNN fp32 gives the same detections after NMS as ONNX Runtime fp32 and raw
outputs within 1e-3 relative; NCNN fp16 boxes stay within 1 px at agreement >= 0.98 (the int8 verdict's agreement).
The demo model is compared here quickly; every converter layout, the zoo's exports and the real checkpoints in the
slow tests.
"""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from harness.client import upload
from harness.frames import demo_frames
from server.models.convert import convert_to_onnx
from server.models.ncnn import ncnn_model_for
from server.vision.engines.ncnn_engine import NcnnFiles
from tests.support.ci_check import check_module
from tests.support.converter_models import (  # noqa: F401 (cache and real_checkpoints are fixtures)
    LARGE_LAYOUTS,
    LAYOUTS,
    REAL_CHECKPOINTS,
    ZOO_YOLOV8,
    cache,
    layout_checkpoint,
    photos,
    real_checkpoints,
)
from tests.support.engine_equality import compare_engines

DEMO_FRAMES = 6
SIZES = (320, 640)
ZOO_EXPORTS = ("yolov8n.onnx", "yolov8n-320.onnx")  # ultralytics' own exports: dynamic, and static at 320


def test_the_demo_model_on_ncnn_gives_onnxruntimes_detections(demo_onnx, tmp_path):
    result = compare_engines(demo_onnx, demo_frames(DEMO_FRAMES), (320, 640), tmp_path)
    assert result.detections > 20  # the shapes are found: real boxes were compared, not empty lists
    assert result.nms_compared >= DEMO_FRAMES * 2  # at conf 0.25 every frame at both sizes (only busy confs tie)
    print(f"\ndemo: {result}")


def converted_and_compared(pt, tmp_path, sizes=SIZES, frames=None):
    """Convert a .pt with the server's converter and compare NCNN with ONNX Runtime on real photos (or frames)."""
    onnx_path = tmp_path / "converted.onnx"
    convert_to_onnx(pt, onnx_path)
    work = tmp_path / "ncnn"
    work.mkdir()
    result = compare_engines(onnx_path, photos() if frames is None else frames, sizes, work)
    print(f"\n{pt.name}: {result}")
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_YOLOV8)
def test_zoo_checkpoints_converted_run_alike_on_ncnn(model_zoo, tmp_path, name):
    converted_and_compared(model_zoo / name, tmp_path)  # the zoo's few training steps leave scores tied


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_EXPORTS)
def test_ultralytics_exports_static_and_dynamic_run_alike_on_ncnn(model_zoo, tmp_path, name):
    print(f"\n{name}: {compare_engines(model_zoo / name, photos(), SIZES, tmp_path)}")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_yolov8_detect_layout_runs_alike_on_ncnn(cache, tmp_path, name):
    converted_and_compared(layout_checkpoint(cache, name), tmp_path, (320,) if name in LARGE_LAYOUTS else SIZES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL_CHECKPOINTS))
def test_real_checkpoints_run_alike_on_ncnn(real_checkpoints, tmp_path, name):
    result = converted_and_compared(real_checkpoints[name], tmp_path)
    if name.startswith("fall"):
        assert result.detections > 0  # people in the photos: real detections compared


@pytest.mark.slow
def test_the_demo_checkpoint_converted_runs_alike_on_ncnn(demo_pt, tmp_path):
    """On the frames it was trained for: on photos it finds a handful of stray shapes, too few to judge fp16 by."""
    result = converted_and_compared(demo_pt, tmp_path, frames=demo_frames(DEMO_FRAMES))
    assert result.nms_compared > 0


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
    assert client.get("/api/status").get_json()["options"]["engine"] == ["auto", "onnxruntime"]


@pytest.mark.parametrize("weights", ["onnx", "pt"])
def test_reset_deletes_the_ncnn_files(client, demo_onnx, demo_pt, weights, app):
    assert upload(client, "/upload/model", demo_onnx if weights == "onnx" else demo_pt).status_code == 201
    uploads = app.extensions["uploads"].root
    written = sorted(p.relative_to(uploads).as_posix() for p in uploads.rglob("*.ncnn.*"))
    assert [name.rsplit(".", 1)[1] for name in written] == ["bin", "json", "param"]
    deleted = client.post("/reset").get_json()["deleted"]
    assert set(written) <= set(deleted)
    assert not list(uploads.rglob("*.ncnn.*"))


# --- the aarch64 check's NCNN step, run here on x86 -----------------------------------------------------------------
def test_the_aarch64_checks_ncnn_step_passes_and_fails_when_ncnn_is_not_offered(demo_onnx, tmp_path):
    detections, drive = check_module("detections"), check_module("drive")

    model = tmp_path / "model.onnx"
    shutil.copyfile(demo_onnx, model)
    assert ncnn_model_for(model).files is not None  # what the server does at upload
    video = drive.write_video(tmp_path / "check.mkv", frames=3)
    ncnn_out = tmp_path / "ncnn.json"
    boxes = tmp_path / "boxes.json"
    args = ["--model", str(model), "--video", str(video), "--frames", "0,1,2", "--ncnn", str(ncnn_out)]
    boxes.write_text(json.dumps(detections.detect_frames(detections.parse_args(args))))
    offered = {"model": {"model": {"engines": {"onnxruntime": ["fp32", "int8"], "ncnn": ["fp32", "fp16"]}}}}
    stream = tmp_path / "stream.json"
    stream.write_text(json.dumps(offered))
    drive.main(["engines", str(stream), str(boxes), str(ncnn_out)])  # passes: raises SystemExit otherwise
    offered["model"]["model"] = {"engines": {"onnxruntime": ["fp32"]}, "ncnn_unavailable": "no reason"}
    stream.write_text(json.dumps(offered))
    with pytest.raises(SystemExit, match="NCNN is not offered"):
        drive.main(["engines", str(stream), str(boxes), str(ncnn_out)])
    moved = json.loads(ncnn_out.read_text())
    first = next(iter(moved["frames"].values()))
    first["boxes"] = [[x + 5 for x in box] for box in first["boxes"]]  # NCNN boxes 5 px off
    ncnn_out.write_text(json.dumps(moved))
    stream.write_text(json.dumps({"model": {"model": {"engines": {"ncnn": ["fp32", "fp16"]}}}}))
    with pytest.raises(SystemExit, match="NCNN fp16"):
        drive.main(["engines", str(stream), str(boxes), str(ncnn_out)])

