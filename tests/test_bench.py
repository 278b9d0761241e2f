"""Smoke test of the benchmark: a tiny video, two variants, Ultralytics on ONNX, the server over HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.fps.cli import main
from bench.fps.records import Variant

DEMO_MODEL = Path(__file__).resolve().parent.parent / "server" / "demo" / "model" / "shapes-yolov8n.onnx"


@pytest.mark.slow
def test_bench_writes_table_json_and_plot(make_video, tmp_path, capsys):
    video = make_video("bench.mp4", width=320, height=240, frames=12)
    out_json, out_plot = tmp_path / "bench.json", tmp_path / "bench.png"
    results = main([
        "--video", str(video), "--model", str(DEMO_MODEL), "--frames", "10", "--warmup", "2",
        "--variants", "fp32-640", "fp32-320-de3", "--serial", "fp32-640", "--http", "fp32-320-de3", "--viewers", "1", "2",
        "--http-seconds", "1", "--threads", "1", "--cache", str(tmp_path / "cache"),
        "--json", str(out_json), "--plot", str(out_plot),
    ])
    table = capsys.readouterr().out
    names = [row["name"] for row in results["rows"]]
    assert names == ["ultralytics-onnx", "fp32-640", "fp32-320-de3", "fp32-640 serial"]
    for name in names:
        assert name in table
    assert "targets" in table and "server over HTTP" in table
    saved = json.loads(out_json.read_text())
    assert saved["rows"] == results["rows"]
    rows = {row["name"]: row for row in saved["rows"]}
    assert rows["fp32-640"]["agreement"] in (1.0, None)  # the reference against itself
    assert all(row["frames"] == 10 and row["fps"] > 0 for row in saved["rows"])
    http = saved["http"]
    assert [(h["variant"], h["viewers"]) for h in http] == [("fp32-320-de3", 1), ("fp32-320-de3", 2)]
    assert all(h["error"] is None and len(h["fps_per_viewer"]) == h["viewers"] for h in http)
    assert all(h["idle_fps"] > 0 and h["server_fps"] > 0 for h in http)  # the server's own counter, no viewer around
    assert all(row["peer_fps"] > 0 for row in saved["rows"][1:])  # each of ours between two peer segments
    assert rows["fp32-640"]["latency_ms"] > 0 and rows["fp32-640 serial"]["latency_ms"] > 0
    assert "fp32-640 latency" in {t["name"] for t in saved["targets"]}
    assert "flags:" in table and "flags" in saved["machine"]
    targets = {t["name"]: t for t in saved["targets"]}
    fp32_goal = float(re.search(r">= ([\d.]+)x", targets["fp32-640"]["goal"]).group(1))
    assert targets["fp32-640"]["met"] is (rows["fp32-640"]["ratio"] >= fp32_goal)  # judged from the measured ratio
    assert targets["int8-640"]["met"] is None and targets["int8-640"]["value"] == "not measured"  # no int8 row ran
    assert out_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text, expected", [
    ("fp32-640", Variant("fp32", 640, 1)),
    ("int8-320-de3", Variant("int8", 320, 3)),
    ("fp32-640-t1", Variant("fp32", 640, 1, 1)),
    ("int8-320-de3-t3", Variant("int8", 320, 3, 3)),
])
def test_variant_names_round_trip(text, expected):
    assert Variant.parse(text) == expected
    assert expected.name == text
