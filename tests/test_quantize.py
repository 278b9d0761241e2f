"""The engine timing's int8 recipes on a real YOLOv8n graph: the kept model loads, detects like fp32, and decodes boxes in float."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from server.demo.shapes import render_scene
from server.models.tuning.judging import TuneRow, box_weighted_map50, choose
from server.models.tuning.recipes import walk_head
from server.models.tuning.report import cached_tuning, int8_path_for, load_report, report_path_for
from server.models.tuning.tune import TimingHooks, TimingRequest, time_engines
from server.vision.detector import Detector
from server.vision.metrics import map50
from server.vision.processing import Detections

DEMO_MODEL = Path(__file__).resolve().parent.parent / "server" / "demo" / "model" / "shapes-yolov8n.onnx"
IMGSZ = 320
CONF = 0.25


def scenes(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_scene(rng)[0] for _ in range(count)]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Tune the demo model once with one recipe; return (fp32 path, int8 path, report, progress calls)."""
    folder = tmp_path_factory.mktemp("int8")
    fp32 = folder / "shapes.onnx"
    fp32.write_bytes(DEMO_MODEL.read_bytes())
    out = int8_path_for(fp32)
    calls = []
    report = time_engines(
        fp32, scenes(9, seed=1), TimingRequest(IMGSZ, recipes=["u8s8-pc-rr"], threads=1),
        TimingHooks(on_progress=lambda stage, progress, message: calls.append((stage, progress, message))),
    )
    return fp32, out, report, calls


def test_the_head_tail_is_found_by_topology_whatever_the_names():
    model = onnx.load(str(DEMO_MODEL))
    tail, head_convs = walk_head(model)
    ops = {node.name: node.op_type for node in model.graph.node}
    tail_ops = {ops[name] for name in tail}
    assert {"Softmax", "Conv", "Sigmoid", "Concat", "Mul"} <= tail_ops  # DFL, class scores, box decoding
    assert [ops[name] for name in tail].count("Conv") == 1  # only the DFL's fixed 1x1 conv
    assert len(head_convs) == 6  # cv2/cv3 last convs at three strides
    renamed = {node.name: f"n{random.Random(i).getrandbits(32)}_{i}" for i, node in enumerate(model.graph.node)}
    for node in model.graph.node:
        node.name = renamed[node.name]
    assert sorted(walk_head(model)[0]) == sorted(renamed[name] for name in tail)


def test_tuning_writes_the_model_and_its_report(tuned):
    fp32, out, report, calls = tuned
    assert Path(report.path) == out.with_name("shapes.int8.u8s8-pc-rr.onnx")
    assert Path(report.path).is_file() and report_path_for(out).is_file()
    assert load_report(report_path_for(out)) == report
    json.dumps(report.as_dict())  # serialisable
    (row,) = [row for row in report.rows if row.chosen]
    assert report.chosen == row.recipe == "u8s8-pc-rr"
    assert report.reference_boxes > 0  # the demo model sees the shapes, so agreement means something
    assert row.ms > 0 and row.speedup > 0 and 0 <= row.agreement <= 1
    assert cached_tuning(fp32) == report
    assert cached_tuning(fp32, min_agreement=0.95) is None  # a stricter bar needs a new choice
    stages = [stage for stage, _, _ in calls]
    assert stages[0] == "preparing" and "calibrating" in stages and stages[-1] == "done"
    progress = [p for _, p, _ in calls]
    assert progress == sorted(progress) and progress[-1] == 1.0


def test_cache_goes_stale_when_the_fp32_model_changes(tuned, tmp_path):
    fp32, out, _, _ = tuned
    same = tmp_path / "same" / fp32.name
    same.parent.mkdir()
    shutil.copy2(fp32, same)  # the same bytes and modification time
    assert cached_tuning(same, out) is not None
    changed = tmp_path / "changed" / fp32.name
    changed.parent.mkdir()
    model = onnx.load(str(fp32))
    model.metadata_props.add(key="retrained", value="yes")  # another model now, under the same name
    onnx.save(model, str(changed))
    os.utime(changed, ns=(fp32.stat().st_atime_ns, fp32.stat().st_mtime_ns))
    assert cached_tuning(changed, out) is None  # tune again


def test_int8_model_detects_the_same_boxes_as_fp32(tuned):
    fp32_path, _, report, _ = tuned
    fp32, int8 = Detector(fp32_path, threads=1), Detector(report.path, threads=1)
    frames = scenes(4, seed=7)
    references = [fp32.detect(f, IMGSZ, CONF, 0.7) for f in frames]
    predictions = [int8.detect(f, IMGSZ, CONF, 0.7) for f in frames]
    assert sum(len(r) for r in references) >= 3
    assert map50(predictions, references) >= 0.8


def test_box_decoding_stays_float(tuned):
    _, _, report, _ = tuned
    fp32_tail = set(walk_head(onnx.load(str(DEMO_MODEL)))[0])
    model = onnx.load(report.path)
    producers = {output: node for node in model.graph.node for output in node.output}
    quantized_from_tail = [
        node.name for node in model.graph.node
        if node.op_type == "QuantizeLinear" and producers.get(node.input[0]) is not None
        and producers[node.input[0]].name in fp32_tail
    ]
    assert quantized_from_tail == []
    dfl = next(node for node in model.graph.node
               if node.op_type == "Conv" and producers[node.input[0]].op_type == "Softmax")
    assert all(producers.get(name) is None or producers[name].op_type != "DequantizeLinear" for name in dfl.input)
    assert sum(node.op_type == "QuantizeLinear" for node in model.graph.node) > 50  # the backbone is int8


def test_choose_keeps_the_fastest_that_agrees_else_the_most_accurate():
    rows = [TuneRow("a", 10.0, 2.0, 0.85), TuneRow("b", 12.0, 1.7, 0.93), TuneRow("c", 20.0, 1.0, 0.99),
            TuneRow("broken", None, None, None, error="boom")]
    assert choose(rows, 0.90) == (rows[1], True)
    near_tie = [TuneRow("fast", 10.0, 2.0, 0.91, noise=0.08),
                TuneRow("as fast, closer", 10.3, 1.95, 0.97, noise=0.04)]
    assert choose(near_tie, 0.90) == (near_tie[1], True)  # 0.05 apart, within the measured noise
    clear_win = [TuneRow("fast", 10.0, 2.0, 0.91, noise=0.02), TuneRow("slower, closer", 10.3, 1.95, 0.97, noise=0.02)]
    assert choose(clear_win, 0.90) == (clear_win[0], True)  # faster by more than the noise
    # Raw ms were timed at different moments; the speedup against fp32 timed alongside is what counts.
    drifted = [TuneRow("timed while idle", 9.0, 1.5, 0.95), TuneRow("timed under load", 10.0, 1.8, 0.95)]
    assert choose(drifted, 0.90) == (drifted[1], True)
    assert choose(rows, 0.995) == (rows[2], False)
    with pytest.raises(RuntimeError, match="boom"):
        choose(rows[3:], 0.9)


def test_agreement_weighs_classes_by_their_boxes():
    boxes = np.array([[10 + 40 * i, 10, 40 + 40 * i, 40] for i in range(10)], np.float32)
    classes = np.array([0] * 9 + [1])
    reference = Detections(boxes, np.full(10, 0.9, np.float32), classes)
    missed_rare = Detections(boxes[:9], np.full(9, 0.9, np.float32), classes[:9])
    assert map50([missed_rare], [reference]) == 0.5  # one box of a rare class halves the plain mean
    assert box_weighted_map50([missed_rare], [reference]) == pytest.approx(0.9)
