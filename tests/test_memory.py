"""Memory that does not creep (issue 28, part 7): what a replaced detector or an ended tuning freed goes back to the
system instead of staying in the allocator's arenas, and a stopped stream keeps none of its frames.

Memory is measured in a fresh child process (tests/support/memory_child.py: anonymous resident memory, never a
peak), before and after the churn once it has run a first time, or before and after a timing: in this process
what earlier tests left running allocates too. Frames are counted here, after collecting garbage.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.waiting import wait_for
from server.config import REPO_ROOT
from server.vision.settings import Settings
from server.vision.sources.base import Frame
from server.vision.sources.live import LiveSource
from server.vision.sources.spec import parse_source
from tests.support.helpers import make_runner, write_video

pytestmark = pytest.mark.slow  # each test loads a few dozen sessions

# Without the trims, 160 MB after the detector swaps below and 40 to 95 MB after a timing (measured 2026-12-08).
MAX_GROWTH_MB = 25
CHILD_TIMEOUT_S = 600


def measured_in_a_child(scenario: str, model: Path, work: Path) -> dict:
    """Run a scenario of tests/support/memory_child.py in a fresh process and return what it measured."""
    done = subprocess.run([sys.executable, "-m", "tests.support.memory_child", scenario, str(model), str(work)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_replaced_detectors_give_their_memory_back(tmp_path, demo_onnx):
    found = measured_in_a_child("detectors", demo_onnx, tmp_path)
    assert found["growth_mb"] < MAX_GROWTH_MB, \
        f"{found['growth_mb']:.0f} MB more after replacing detectors {found['swaps']} times"


def test_a_cancelled_timing_gives_its_memory_back(tmp_path, demo_onnx):
    held = measured_in_a_child("timing", demo_onnx, tmp_path)["held_mb"]
    assert max(held) < MAX_GROWTH_MB, f"MB still held after each engine timing ended: {held}"


def frames_alive() -> list[Frame]:
    """Every Frame still reachable, once garbage (cycles a test left) is collected."""
    gc.collect()
    return [item for item in gc.get_objects() if isinstance(item, Frame)]


def new_frames(earlier: list[Frame]) -> list[Frame]:
    """The frames alive now that were not alive before (earlier holds those, so their ids are not reused)."""
    seen = {id(frame) for frame in earlier}
    return [frame for frame in frames_alive() if id(frame) not in seen]


def test_a_stopped_stream_holds_no_frames(tmp_path, demo_detector):
    """The service keeps a stopped runner for its numbers; the frames its Keyframer held must not stay with it."""
    video = write_video(tmp_path / "wide.mp4", width=1280, height=720, frames=40)
    earlier = frames_alive()  # what other tests left is theirs to answer for
    for realtime in (False, True, False, True):  # paced, the frames wait in an outbox; flat out, in the hand-off
        settings = Settings(realtime=realtime, detect_every=10, interpolate="always", imgsz=320)
        runner, ended = make_runner(video, demo_detector, settings)
        runner.start()
        assert wait_for(lambda: runner.hub.published >= 15, timeout=60)
        runner.stop()
        assert not runner.thread.is_alive() and ended == [None]
        frames = new_frames(earlier)
        assert not frames, f"a stopped stream (realtime {realtime}) still holds {len(frames)} frames"


class SteadyCamera:
    """A live connection sending a small frame every 10 ms."""

    fps = 0.0

    def read(self):
        time.sleep(0.01)
        return np.full((48, 64, 3), 90, np.uint8)

    def close(self):
        pass


def test_a_closed_live_source_holds_no_frame():
    """A stopped live stream's source stays reachable (its status is shown); the newest frame must not stay with it."""
    earlier = frames_alive()
    source = LiveSource(parse_source("rtsp://cam/x"), opener=lambda spec, timeout: SteadyCamera())
    assert wait_for(lambda: source.received >= 5, timeout=10)
    assert source.read(timeout=1) is not None
    source.close()
    assert not new_frames(earlier), "a closed live source still holds its newest frame"
    assert source.status()["state"] == "ended"
