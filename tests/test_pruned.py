"""Channel-pruned YOLOv8 models (tools/slim.py's, Torch-Pruning's example) convert, run on every engine and stream.

The demo model and a checkpoint trained by others are pruned with Torch-Pruning in an ultralytics child
(bench/ultralytics_reference.py prune): uniformly (cv0 and cv1 of each C2f stay equally wide, so the result is an
ordinary ultralytics checkpoint with widths no yaml gives) and globally (C2f's parts unequal: saved as Torch-Pruning's
example saves it, __main__.C2f_v2, and as a C2f with unequal parts). The server's conversion must be the network
ultralytics exports: of the ordinary checkpoint by ultralytics itself, of the others from the pruning process, as the
example's user exports it. Comparisons are those of tests/test_converter.py and tests/engine_equality.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from harness.client import upload
from harness.frames import demo_frames
from harness.waiting import status_when
from server import create_app
from server.models.checkpoint import read_checkpoint
from server.models.convert import convert_to_onnx
from server.models.identify import inspect_checkpoint
from tests.support.converter_models import (  # noqa: F401 (cache and real_checkpoints are fixtures)
    Cache,
    cache,
    compare,
    photos,
    real_checkpoints,
    reference,
    ultralytics_export,
)
from tests.support.engine_equality import compare_engines
from tests.support.helpers import config_for

ROOT = Path(__file__).resolve().parent.parent
DEMO_PT = ROOT / "server" / "demo" / "model" / "shapes-yolov8n.pt"
RATIO = 0.3  # removes about half of YOLOv8n's FLOPs
SIZES = (320, 640)
ENGINES = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("ncnn", "fp32"), ("ncnn", "fp16"), ("ncnn", "int8")]


def pruned_set(cache: Cache, source: Path, mode: str) -> Path:
    """Return the folder the reference child writes for source pruned by RATIO (mode "uniform" or "global")."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    folder = cache.folder / f"pruned-{digest}-{mode}-{RATIO}-recalibrated"

    def make(done: Path) -> None:
        options = ["--global"] if mode == "global" else []
        reference("prune", str(source), str(folder), "--ratio", str(RATIO), *options, cwd=cache.folder)
        done.write_text("done")

    cache.get(f"{folder.name}.done", make)
    return folder


def sources(real_checkpoints: dict[str, Path]) -> dict[str, Path]:
    return {"demo": DEMO_PT, **real_checkpoints}


def conv_widths(path: Path) -> list[int]:
    """Output channels of every Conv of an ONNX model, in graph order."""
    model = onnx.load(str(path))
    weights = {init.name: init for init in model.graph.initializer}
    return [int(numpy_helper.to_array(weights[node.input[1]]).shape[0])
            for node in model.graph.node if node.op_type == "Conv" and node.input[1] in weights]  # fmt: skip


def split_sizes(path: Path) -> list[list[int]]:
    model = onnx.load(str(path))
    constants = {init.name: numpy_helper.to_array(init).tolist() for init in model.graph.initializer}
    return [constants[node.input[1]] for node in model.graph.node if node.op_type == "Split" and "model.22" not in node.name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo", "railway-obstacles-yolov8.pt"])
def test_a_uniformly_pruned_checkpoint_is_ultralytics_own_and_converts_to_its_export(cache, real_checkpoints, tmp_path,
                                                                                     name):
    pt = pruned_set(cache, sources(real_checkpoints)[name], "uniform") / "pruned.pt"
    assert not any("C2f_v2" in g for g in read_checkpoint(pt)[1])  # an ordinary ultralytics checkpoint
    ours = tmp_path / "ours.onnx"
    convert_to_onnx(pt, ours)
    unpruned = tmp_path / "unpruned.onnx"
    convert_to_onnx(sources(real_checkpoints)[name], unpruned)
    assert sum(conv_widths(ours)) < 0.8 * sum(conv_widths(unpruned))
    assert any(width % 8 for width in conv_widths(ours))  # widths no width multiple gives: read from the weights
    results = compare(ours, ultralytics_export(cache, pt), SIZES)
    print(f"\n{name} pruned uniformly: {results}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo", "railway-obstacles-yolov8.pt"])
def test_torch_prunings_c2f_v2_checkpoint_converts_to_the_network_its_script_exports(cache, real_checkpoints,
                                                                                     tmp_path, name):
    folder = pruned_set(cache, sources(real_checkpoints)[name], "global")
    pt = folder / "pruned.pt"
    assert "__main__.C2f_v2" in read_checkpoint(pt)[1]
    assert inspect_checkpoint(pt).family == "yolov8"
    ours = tmp_path / "ours.onnx"
    convert_to_onnx(pt, ours)
    print(f"\n{name} C2f_v2: {compare(ours, folder / 'export.onnx', SIZES)}")


@pytest.mark.slow
def test_a_c2f_with_unequal_parts_converts_to_the_same_network(cache, tmp_path):
    """Ultralytics' own C2f cannot run it (it chunks in equal halves); the converter splits where m[0] begins."""
    folder = pruned_set(cache, DEMO_PT, "global")
    ours = tmp_path / "ours.onnx"
    convert_to_onnx(folder / "unequal-c2f.pt", ours)
    assert any(first != second for first, second in split_sizes(ours))
    print(f"\nunequal C2f: {compare(ours, folder / 'export.onnx', SIZES)}")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["uniform/pruned.pt", "global/pruned.pt", "global/export.onnx"])
def test_pruned_models_run_alike_on_ncnn(cache, tmp_path, form):
    mode, file = form.split("/")
    source = pruned_set(cache, DEMO_PT, mode) / file
    onnx_path = tmp_path / "model.onnx"
    if source.suffix == ".pt":
        convert_to_onnx(source, onnx_path)
    else:
        onnx_path.write_bytes(source.read_bytes())
    work = tmp_path / "ncnn"
    work.mkdir()
    result = compare_engines(onnx_path, photos() + demo_frames(), SIZES, work)
    if mode == "uniform":  # boxes compared after NMS; globally pruned and not fine-tuned, scores tie: raw outputs
        assert result.nms_compared > 0
    print(f"\n{form}: {result}")


@pytest.mark.slow
def test_a_c2f_v2_checkpoint_uploads_is_timed_by_auto_and_streams_on_every_engine(cache, tmp_path, make_video):
    folder = pruned_set(cache, DEMO_PT, "global")
    app = create_app(config_for(tmp_path, engine="auto", int8_recipes="u8s8-pc-rr"))
    client = app.test_client()
    assert upload(client, "/upload/video", make_video(frames=30)).status_code == 201
    assert upload(client, "/upload/model", folder / "export.onnx").status_code == 201  # the example's own export
    assert upload(client, "/upload/model", folder / "pruned.pt", name="pruned.pt").status_code == 201
    assert client.post("/api/settings", json={"imgsz": 320, "realtime": False, "loop": True}).status_code == 200
    assert client.post("/stream/start").status_code == 200
    status = status_when(client, lambda s: s["precision"]["int8"] and s["job"] is None)
    rows = {(r["engine"], r["precision"]): r for r in status["precision"]["int8"]["rows"]}
    assert set(ENGINES[:4]) <= set(rows), sorted(rows)
    assert all(row["error"] is None and row["ms"] > 0 for row in rows.values()), rows
    print("\nauto on the pruned model: " + ", ".join(f"{k}: {r['ms']:.1f} ms, {r['agreement']}" for k, r in rows.items()))
    for engine, precision in ENGINES:
        offered = client.get("/api/status").get_json()["options"]["engines"]
        if precision not in offered.get(engine, []):
            assert (engine, precision) == ("ncnn", "int8"), offered
            continue
        response = client.post("/api/settings", json={"engine": engine, "precision": precision})
        assert response.status_code == 200, response.get_json()
        status_when(client, lambda s: (s["precision"]["engine"], s["precision"]["active"]) == (engine, precision),
                    timeout=120)  # fmt: skip
        frames = client.get("/api/status").get_json()["stats"]["frames"]
        status_when(client, lambda s: s["stats"]["frames"] >= frames + 3 and s["error"] is None, timeout=60)
    client.post("/stream/stop")
    app.extensions["detection"].stop()
