"""GET /api/trace: the next N frames' stage spans per thread, as a Chrome trace that Perfetto opens."""

from __future__ import annotations

import json
import threading

import requests

from harness.client import upload
from harness.waiting import wait_for
from server.vision.settings import Settings
from tests.support.helpers import make_runner

LOOPING = Settings(imgsz=320, realtime=False, loop=True, threads=1)


def spans(trace: dict) -> list[dict]:
    return [event for event in trace["traceEvents"] if event["ph"] == "X" and event.get("cat") == "stage"]


def thread_names(trace: dict) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}


def check_frame_order(trace: dict) -> None:
    """Within each frame: decoded, then inferred, then encoded; and each span on the thread of its stage."""
    names = thread_names(trace)
    by_frame: dict[int, dict[str, dict]] = {}
    for event in spans(trace):
        by_frame.setdefault(event["args"]["frame"], {})[event["name"]] = event
    for frame, stages in by_frame.items():
        if "inference" not in stages:
            continue  # a tracked frame (detect_every > 1)
        decode, inference, encode = stages["decode"], stages["inference"], stages["encode"]
        assert decode["ts"] + decode["dur"] <= inference["ts"] + 1, frame
        assert inference["ts"] + inference["dur"] <= encode["ts"] + 1, frame
        assert names[decode["tid"]] == "frame-source"
        assert names[inference["tid"]] == "stream-detect"
        assert names[encode["tid"]] == "stream-render"


def test_record_trace_returns_spans_of_the_next_frames_per_thread(make_video, demo_detector):
    runner, _ = make_runner(make_video(frames=30), demo_detector, LOOPING)
    runner.start()
    try:
        assert wait_for(lambda: runner.stats.frames >= 3, timeout=60)
        trace = json.loads(json.dumps(runner.record_trace(6)))  # what the route sends must be plain JSON
    finally:
        runner.stop()
    assert trace["otherData"]["frames"] == 6
    frames = {event["args"]["frame"] for event in spans(trace)}
    assert len(frames) == 6
    stages = {event["name"] for event in spans(trace)}
    assert {"decode", "preprocess", "inference", "postprocess", "track", "draw", "encode"} <= stages
    assert set(thread_names(trace).values()) == {"frame-source", "stream-detect", "stream-render"}
    check_frame_order(trace)
    publishes = [event for event in trace["traceEvents"] if event["name"] == "publish"]
    assert len(publishes) == 6
    assert runner.trace is None  # the recorder is gone once the trace is returned


def test_trace_with_the_onnx_runtime_operator_profile(make_video, demo_detector):
    runner, _ = make_runner(make_video(frames=30), demo_detector, LOOPING)
    runner.start()
    try:
        assert wait_for(lambda: runner.stats.frames >= 3, timeout=60)
        trace = runner.record_trace(4, onnx_profile=True)
        assert wait_for(lambda: runner.pipeline.profiling is None, timeout=10)
    finally:
        runner.stop()
    operators = [e for e in trace["traceEvents"] if e.get("pid") == 2 and e.get("cat") == "Node"]
    kinds = {e["args"].get("op_name", "") for e in operators}
    assert any("Conv" in kind for kind in kinds), kinds  # Conv, or FusedConv/NhwcConv as the CPU's kernels go
    inference = [e for e in spans(trace) if e["name"] == "inference"]
    first, last = min(e["ts"] for e in inference), max(e["ts"] + e["dur"] for e in inference)
    inside = [e for e in operators if first - 1000 <= e["ts"] <= last + 1000]
    assert len(inside) > 0.9 * len(operators), "operator spans do not line up with the inference spans"


def test_trace_route(live_server, make_video, demo_onnx):
    base = live_server.url
    assert requests.get(f"{base}/api/trace?frames=3", timeout=10).status_code == 409  # not streaming
    for path, kind in ((make_video(frames=30), "video"), (demo_onnx, "model")):
        assert upload(base, f"/upload/{kind}", path).ok
    requests.post(f"{base}/api/settings", json={"imgsz": 320, "realtime": False}, timeout=5)
    assert requests.post(f"{base}/stream/start", timeout=30).ok
    for bad in ("0", "abc", "100000", "3&onnx=maybe"):
        response = requests.get(f"{base}/api/trace?frames={bad}", timeout=10)
        assert response.status_code == 400 and "error" in response.json(), bad
    response = requests.get(f"{base}/api/trace?frames=5", timeout=60)
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    trace = response.json()
    assert trace["otherData"]["frames"] == 5
    check_frame_order(trace)
    requests.post(f"{base}/stream/stop", timeout=10)


def test_a_trace_waiting_on_a_stream_that_ends_returns_what_it_has(make_video, demo_detector):
    runner, ended = make_runner(make_video(frames=12), demo_detector, Settings(imgsz=320, realtime=False, loop=False))
    traces: list[dict] = []
    waiting = threading.Thread(target=lambda: traces.append(runner.tracing.record(600, timeout=3600)), daemon=True)
    waiting.start()
    assert wait_for(lambda: runner.trace is not None, timeout=10)
    runner.start()
    assert wait_for(lambda: ended, timeout=60)
    waiting.join(timeout=60)  # the stream's end, not the hour-long deadline, ends the wait
    assert not waiting.is_alive()
    assert traces[0]["otherData"] == {"frames": 12, "requested": 600}
