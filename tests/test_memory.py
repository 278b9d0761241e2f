"""Memory that does not creep (issue 28, part 7): what a replaced detector or an ended tuning freed goes back to the
system instead of staying in the allocator's arenas, and a stopped stream keeps none of its frames.

Memory is measured twice in this process (anonymous resident memory, /proc/self/smaps_rollup), never as a peak:
before and after the churn once it has run a first time (sessions loaded, arenas grown), or before and after a
tuning. Every Start makes new threads, so each round of churn runs on a thread of its own, as the stream's do.
"""

from __future__ import annotations

import gc
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from server.jobs import JobBoard
from server.models.runtime import ModelRuntime
from server.models.tuning.job import EngineTiming
from server.models.tuning.tune import TimingRequest
from server.vision.sources.file import sample_frames
from server.vision.settings import Settings
from server.vision.sources.base import Frame
from server.vision.sources.live import LiveSource
from server.vision.sources.spec import parse_source
from tests.support.helpers import make_runner, write_video
from harness.waiting import wait_for

pytestmark = pytest.mark.slow  # each test loads a few dozen sessions

# Without the trims, 160 MB after the detector swaps below and 40 to 95 MB after a tuning (measured 2026-12-08).
MAX_GROWTH_MB = 25
# engine, precision, input size: each change loads another detector, as a user's settings churn does
SWAPS = [("onnxruntime", "fp32", 640), ("ncnn", "fp32", 320), ("onnxruntime", "fp32", 416),
         ("ncnn", "fp16", 640), ("onnxruntime", "fp32", 320), ("ncnn", "fp32", 416)]


def anonymous_mb() -> float:
    """This process' anonymous resident memory (heap, arenas, sessions' buffers), from /proc/self/smaps_rollup."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Anonymous line in /proc/self/smaps_rollup")


def on_a_new_thread(work) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def growth_mb(churn, rounds: int) -> float:
    """Run churn once to warm up, then `rounds` more times, each on a new thread; return the memory it added."""
    on_a_new_thread(churn)
    before = anonymous_mb()
    for _ in range(rounds):
        on_a_new_thread(churn)
    return anonymous_mb() - before


@pytest.fixture
def runtime(tmp_path, demo_onnx) -> ModelRuntime:
    model = shutil.copy(demo_onnx, tmp_path / "demo.onnx")  # its NCNN copy is written beside it
    return ModelRuntime(Path(model), lambda: None)


def test_replaced_detectors_give_their_memory_back(runtime):
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)

    def churn():
        for engine, precision, imgsz in SWAPS:
            settings = Settings(engine=engine, precision=precision, imgsz=imgsz, threads=2)
            for _ in range(2):
                runtime.detector_for(settings).detect(frame, imgsz, 0.25, 0.7)

    assert runtime.backends.ncnn.unavailable() is None, runtime.backends.ncnn.unavailable()
    growth = growth_mb(churn, rounds=4)
    assert growth < MAX_GROWTH_MB, f"{growth:.0f} MB more after replacing detectors {4 * len(SWAPS)} times"



class TimingBoard(JobBoard):
    """A job board that says when the tuning reaches its timing rounds: every session it compares is loaded."""

    def __init__(self):
        super().__init__()
        self.timing = threading.Event()

    def update(self, kind, stage, progress, message=""):
        super().update(kind, stage, progress, message)
        if stage == "timing":
            self.timing.set()


def test_a_cancelled_tuning_gives_its_memory_back(tmp_path, demo_onnx):
    video = write_video(tmp_path / "calibration.mp4", frames=30)
    held = []
    for attempt in range(3):  # as Stop and Start cancel and start it again
        fp32 = Path(shutil.copy(demo_onnx, tmp_path / f"model-{attempt}.onnx"))
        board = TimingBoard()
        tuning = EngineTiming(board, ["u8s8-pc"])
        before = anonymous_mb()
        tuning.start(fp32, lambda count: sample_frames(video, count), TimingRequest(320, 0.9, 1))
        assert board.timing.wait(120), "the tuning never reached its timing rounds"
        assert tuning.cancel()
        held.append(round(anonymous_mb() - before, 1))
    assert max(held) < MAX_GROWTH_MB, f"MB still held after each tuning ended: {held}"


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
