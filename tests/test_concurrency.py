"""Long steps never block the service: requests answer, conflicts are refused, producers stop; over HTTP.

Slow steps are held open with an event inside the real code path (a wrapped model check, video probe or
inference), so each test can look at the server while the step is under way, then let it finish.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import pytest
import requests

from harness.client import upload
from harness.waiting import wait_for
from server.models import acceptance
from server.vision import detector as detector_module
from server.web import uploads as uploads_module

ANSWER_S = 30.0  # a request that waited for the held step would never answer: this only ends such a wait


def get_status(base):
    return requests.get(f"{base}/api/status", timeout=ANSWER_S).json()


class Gate:
    """Hold a wrapped function inside its call until released; tell when a call is inside."""

    def __init__(self, function, hold_when=lambda *args, **kwargs: True):
        self.function, self.hold_when = function, hold_when
        self.inside, self.release = threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        if self.hold_when(*args, **kwargs):
            self.inside.set()
            assert self.release.wait(60), "the test never released the gate"
        return self.function(*args, **kwargs)


def producer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stream-") and t.is_alive()]


def assert_answers_while_held(base):
    """Status and settings answer while the step is held; what would conflict is refused, not queued."""
    assert requests.get(f"{base}/api/status", timeout=ANSWER_S).status_code == 200
    assert requests.post(f"{base}/api/settings", json={"conf": 0.3}, timeout=ANSWER_S).status_code == 200
    start = requests.post(f"{base}/stream/start", timeout=ANSWER_S)
    assert start.status_code == 409 and "being processed" in start.json()["error"]
    reset = requests.post(f"{base}/reset", timeout=ANSWER_S)
    assert reset.status_code == 409


def test_model_checks_run_outside_the_service_lock(live_server, monkeypatch, make_video, demo_onnx):
    base = live_server.url
    assert upload(base, "/upload/video", make_video("clip.avi", frames=20)).status_code == 201
    gate = Gate(acceptance.trial_run)  # the model's trial run, the longest check
    monkeypatch.setattr(acceptance, "trial_run", gate)
    results = []
    upload_thread = threading.Thread(target=lambda: results.append(upload(base, "/upload/model", demo_onnx)))
    upload_thread.start()
    assert gate.inside.wait(30)
    try:
        assert_answers_while_held(base)
        second = upload(base, "/upload/model", demo_onnx)
        assert second.status_code == 409
    finally:
        gate.release.set()
        upload_thread.join(60)
    assert results[0].status_code == 201, results[0].text
    assert get_status(base)["model"]["name"] == demo_onnx.name


def test_video_probing_runs_outside_the_service_lock(live_server, monkeypatch, make_video):
    base = live_server.url
    gate = Gate(uploads_module.probe_video)
    monkeypatch.setattr(uploads_module, "probe_video", gate)
    results = []
    video = make_video("clip.avi")
    upload_thread = threading.Thread(target=lambda: results.append(upload(base, "/upload/video", video)))
    upload_thread.start()
    assert gate.inside.wait(30)
    try:
        assert_answers_while_held(base)
    finally:
        gate.release.set()
        upload_thread.join(60)
    assert results[0].status_code == 201, results[0].text


def test_a_producer_that_does_not_stop_in_time_still_counts_and_no_second_one_starts(
    live_server, monkeypatch, make_video, demo_onnx
):
    base = live_server.url
    upload(base, "/upload/video", make_video("clip.avi", frames=30))
    upload(base, "/upload/model", demo_onnx)
    requests.post(f"{base}/api/settings", json={"imgsz": 320, "realtime": False}, timeout=5)
    hold = threading.Event()
    gate = Gate(detector_module.Detector.infer, hold_when=lambda *args: hold.is_set())
    monkeypatch.setattr(detector_module.Detector, "infer", lambda self, tensor: gate(self, tensor))
    monkeypatch.setattr("server.vision.stream.JOIN_TIMEOUT_S", 0.3)
    assert requests.post(f"{base}/stream/start", timeout=30).status_code == 200
    assert wait_for(lambda: get_status(base)["stats"]["frames"] >= 2)
    first_threads = set(producer_threads())
    one_stream = len(first_threads)  # however many threads one stream's producer has
    hold.set()
    assert gate.inside.wait(30)  # the producer is now stuck inside an inference
    try:
        assert requests.post(f"{base}/stream/stop", timeout=10).status_code == 200
        status = get_status(base)
        assert status["streaming"] is True  # its thread is alive: it has not stopped yet
        assert requests.post(f"{base}/stream/start", timeout=5).status_code == 409
        assert requests.post(f"{base}/reset", timeout=5).status_code == 409
        assert requests.get(f"{base}/video_feed", timeout=5).status_code == 409
        assert set(producer_threads()) <= first_threads  # no second producer was started
    finally:
        hold.clear()
        gate.release.set()
    assert wait_for(lambda: get_status(base)["streaming"] is False, timeout=15)
    assert requests.post(f"{base}/stream/start", timeout=30).status_code == 200
    assert wait_for(lambda: get_status(base)["stats"]["frames"] >= 1)
    assert len(producer_threads()) == one_stream
    requests.post(f"{base}/stream/stop", timeout=10)


@pytest.mark.slow
def test_status_never_fails_while_reset_deletes(live_server, make_video, demo_onnx):
    base = live_server.url
    failures, done = [], threading.Event()

    def poll():
        while not done.is_set():
            response = requests.get(f"{base}/api/status", timeout=10)
            if response.status_code != 200:
                failures.append(response.status_code)

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(4)]
    for poller in pollers:
        poller.start()
    try:
        for round_index in range(6):
            assert upload(base, "/upload/video", make_video(f"clip{round_index}.avi", frames=5)).status_code == 201
            assert upload(base, "/upload/model", demo_onnx).status_code == 201
            assert requests.post(f"{base}/reset", timeout=30).status_code == 200
    finally:
        done.set()
        for poller in pollers:
            poller.join(10)
    assert failures == []


# --- int8 tuning: cancelled and joined, re-judged, quiet -------------------------------------------------------
RECIPES = "u8s8-pc,s8s8-pc"


def tuning_thread_alive() -> bool:
    return any(t.name == "engine-timing" and t.is_alive() for t in threading.enumerate())


def start_tuning(server, make_video, demo_onnx):
    base = server.url
    assert upload(base, "/upload/video", make_video("clip.avi", frames=40)).status_code == 201
    assert upload(base, "/upload/model", demo_onnx).status_code == 201
    assert requests.post(f"{base}/api/settings", json={"precision": "int8", "imgsz": 320}, timeout=5).ok
    assert wait_for(lambda: (get_status(base)["job"] or {}).get("progress", 0) > 0.1, timeout=120)


def leftovers(root):
    return sorted(p.name for p in root.rglob("*") if ".int8" in p.name or p.name.startswith(".engine-timing-"))


@pytest.mark.slow
def test_reset_cancels_and_joins_int8_tuning(serve, make_video, demo_onnx):
    server = serve(int8_recipes=RECIPES)
    start_tuning(server, make_video, demo_onnx)
    response = requests.post(f"{server.url}/reset", timeout=150)
    assert response.status_code == 200, response.text
    assert not tuning_thread_alive()
    status = get_status(server.url)
    assert status["job"] is None and status["precision"]["building"] is False
    assert leftovers(server.uploads) == []


@pytest.mark.slow
def test_stop_and_a_new_upload_cancel_int8_tuning(serve, make_video, demo_onnx):
    server = serve(int8_recipes=RECIPES)
    start_tuning(server, make_video, demo_onnx)
    assert requests.post(f"{server.url}/stream/stop", timeout=150).status_code == 200
    assert not tuning_thread_alive() and get_status(server.url)["job"] is None

    requests.post(f"{server.url}/api/settings", json={"precision": "int8"}, timeout=5)  # tunes again
    assert wait_for(lambda: (get_status(server.url)["job"] or {}).get("progress", 0) > 0.1, timeout=120)
    assert upload(server.url, "/upload/video", make_video("other.avi", frames=20)).status_code == 201
    assert not tuning_thread_alive()
    assert leftovers(server.uploads) == []


@pytest.mark.slow
def test_min_agreement_rejudges_the_measured_recipes_and_tuning_is_quiet(serve, make_video, demo_onnx, caplog):
    server = serve(int8_recipes=RECIPES)
    stdout, jobs, swaps = sys.stdout, [], []
    caplog.set_level(logging.INFO)
    start_tuning(server, make_video, demo_onnx)

    def tuned():
        status = get_status(server.url)
        jobs.append(status["job"])
        if sys.stdout is not stdout or logging.getLogger().filters:
            swaps.append("process-wide swap seen")
        return status["precision"]["int8"] is not None and status["job"] is None

    assert wait_for(tuned, timeout=300, interval=0.05)
    assert swaps == []  # neither sys.stdout nor the root logger was touched while tuning ran
    # ONNX Runtime's own modules (its package folder), not this project's onnxruntime_engine.py
    chatter = [r for r in caplog.records if f"{os.sep}onnxruntime{os.sep}" in r.pathname and r.levelno < logging.WARNING]
    assert chatter == []
    steps = [job for job in jobs if job and job["kind"] == "engine-timing"]
    assert any(job["message"].startswith("step ") for job in steps)
    assert any(isinstance(job["eta_s"], (int, float)) for job in steps)

    before = get_status(server.url)["precision"]["int8"]
    assert requests.post(f"{server.url}/api/settings", json={"min_agreement": 1.0}, timeout=5).ok
    status = get_status(server.url)
    after = status["precision"]["int8"]
    assert status["job"] is None and not tuning_thread_alive()  # no retuning
    assert after["min_agreement"] == 1.0 and after["seconds"] == before["seconds"]
    assert [r["ms"] for r in after["rows"]] == [r["ms"] for r in before["rows"]]
    recipes = [r for r in after["rows"] if r["engine"] == "onnxruntime" and r["precision"] == "int8"]
    assert after["qualified"] == any(r["agreement"] >= 1.0 for r in recipes if r["error"] is None)
    chosen = next(r for r in after["rows"] if r["chosen"])
    assert after["chosen"] == chosen["recipe"] and after["path"].endswith(f".int8.{chosen['recipe']}.onnx")
