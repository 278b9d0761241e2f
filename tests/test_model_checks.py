"""Hostile models are refused at upload by their declared shapes and a budgeted trial run, over HTTP.

Every crafted .onnx here carries Ultralytics metadata and declares a YOLOv8 input and output, so reading the file
alone accepts it; only the static checks on what it declares (input size, op domains) and the trial run in a
budgeted child process (server.models.trial_run) refuse it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import requests

from harness.client import upload, video_feed
from harness.waiting import wait_for
from tests.support import crafted_onnx

TRIAL_TIMEOUT_S = 3.0
SERVER_GROWTH_MB = 300  # the server's own peak memory may not grow by more than this during a refusal
PROC_STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float:
    return int(re.search(rf"^{field}:\s+(\d+) kB", PROC_STATUS.read_text(), re.M).group(1)) / 1024


def resident_mb() -> float:
    """The test process's resident memory now, the in-process server's included."""
    return _status_mb("VmRSS")


def restart_peak() -> None:
    """Start the process's peak memory again from what is resident now (Linux's clear_refs 5).

    The peak since the process began (ru_maxrss, VmHWM) says nothing about one upload once an earlier test peaked
    higher; from here on it is the peak of what follows.
    """
    CLEAR_REFS.write_text("5")


def peak_mb() -> float:
    """The process's peak resident memory since restart_peak()."""
    return _status_mb("VmHWM")


def test_the_peak_is_measured_from_the_restart_not_from_an_earlier_high():
    earlier = np.ones(2 * SERVER_GROWTH_MB * 2**20 // 8)  # an earlier test's high-water mark
    del earlier
    before = resident_mb()
    restart_peak()
    assert peak_mb() - before < SERVER_GROWTH_MB  # the earlier high is forgotten
    taken = np.ones(2 * SERVER_GROWTH_MB * 2**20 // 8)  # np.ones writes every page: all of it resident
    assert peak_mb() - before > SERVER_GROWTH_MB  # memory taken after the restart is seen
    del taken


REFUSED = {
    "constant-of-shape-2^33": (crafted_onnx.constant_of_shape_bomb, "memory"),
    "endless-loop": (crafted_onnx.endless_loop, "did not finish"),
    "custom-domain-op": (crafted_onnx.custom_domain_op, "evil.ops:Boom"),
    "input-65536x65536": (lambda: crafted_onnx.declared_input(65536, 65536), "65536 x 65536"),
    "input-8192x8192": (lambda: crafted_onnx.declared_input(8192, 8192), "8192 x 8192"),
    "output-not-yolov8": (crafted_onnx.wrong_anchor_count, "outputs 1 x 6 x 7"),
}


@pytest.fixture
def checked_server(serve):
    return serve(model_check_timeout=TRIAL_TIMEOUT_S, model_check_mb=1024)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_onnx_is_refused_quickly_without_taking_memory(checked_server, tmp_path, name):
    build, words = REFUSED[name]
    path = crafted_onnx.save(build(), tmp_path / f"{name}.onnx")
    before = resident_mb()
    restart_peak()
    response = upload(checked_server.url, "/upload/model", path)  # a trial run that never ended would time out
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]
    assert peak_mb() - before < SERVER_GROWTH_MB  # the model ran in the capped child, never in the server
    status = requests.get(f"{checked_server.url}/api/status", timeout=5).json()
    assert status["model"] is None
    assert not any((checked_server.uploads / "model").glob("*"))


def test_a_crafted_model_that_behaves_is_accepted(checked_server, tmp_path):
    """The same construction without the hostile part passes: the refusals above are about that part."""
    for model in (crafted_onnx.harmless(), crafted_onnx.declared_input(480, 640)):
        path = crafted_onnx.save(model, tmp_path / "fine.onnx")
        response = upload(checked_server.url, "/upload/model", path)
        assert response.status_code == 201, response.text


def test_nonfinite_boxes_are_dropped_and_counted_while_the_stream_goes_on(checked_server, tmp_path, make_video):
    base = checked_server.url
    model = crafted_onnx.save(crafted_onnx.non_finite(), tmp_path / "nan.onnx")
    assert upload(base, "/upload/model", model).status_code == 201
    assert upload(base, "/upload/video", make_video("clip.avi", frames=20)).status_code == 201
    requests.post(f"{base}/api/settings", json={"imgsz": 320, "realtime": False}, timeout=5)
    assert requests.post(f"{base}/stream/start", timeout=30).status_code == 200

    def counted():
        stats = requests.get(f"{base}/api/status", timeout=5).json()["stats"]
        return stats["frames"] >= 10 and stats["dropped_nonfinite"] > 0

    assert wait_for(counted, timeout=60)
    status = requests.get(f"{base}/api/status", timeout=5).json()
    assert status["streaming"] and status["error"] is None
    assert status["stats"]["detections"] == 0
    with video_feed(base, timeout=10) as jpegs:
        assert next(jpegs)
