"""The pipelined producer: stages on their own threads, hand-offs, pacing, stop, stats, viewer caps."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace

import pytest

from harness.waiting import wait_for
from server.vision.hub import FrameHub
from server.vision.settings import Settings
from server.vision.sources import FrameSource
from server.vision.stream import Handoff
from tests.support.helpers import make_runner

FLAT_OUT = Settings(imgsz=320, realtime=False, loop=False, threads=1)


def stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("stream-", "frame-source"))]


@pytest.mark.parametrize("pipelined", [True, False])
def test_flat_out_publishes_every_frame_then_ends_with_no_thread_left(make_video, demo_detector, pipelined):
    runner, ended = make_runner(make_video(frames=12), demo_detector, FLAT_OUT, pipelined=pipelined)
    runner.start()
    assert wait_for(lambda: ended, timeout=60)
    assert ended == [None]
    assert runner.stats.frames == 12 and runner.hub.published == 12
    snapshot = runner.stats.snapshot(0)
    assert snapshot["dropped"] == 0
    assert snapshot["frame_latency_ms"] >= snapshot["latency_ms"]["inference"] > 0
    assert snapshot["fps"] == 0.0  # ended: nothing is being published now
    assert wait_for(lambda: stage_threads() == [], timeout=5), stage_threads()


def test_stages_run_on_their_own_threads(make_video, demo_detector):
    runner, _ = make_runner(make_video(frames=20), demo_detector, replace(FLAT_OUT, loop=True))
    seen: dict[str, set] = {}
    original_detect, original_render = runner.pipeline.detect, runner.pipeline.render

    def detect(*args, **kwargs):
        seen.setdefault("detect", set()).add(threading.current_thread().name)
        return original_detect(*args, **kwargs)

    def render(*args, **kwargs):
        seen.setdefault("render", set()).add(threading.current_thread().name)
        return original_render(*args, **kwargs)

    runner.pipeline.detect, runner.pipeline.render = detect, render
    runner.start()
    assert wait_for(lambda: runner.stats.frames >= 5, timeout=60)
    runner.stop()
    assert seen == {"detect": {"stream-detect"}, "render": {"stream-render"}}


def test_stop_is_prompt_and_leaves_no_thread_and_clears_the_stats(make_video, demo_detector):
    runner, ended = make_runner(make_video(frames=30), demo_detector, replace(FLAT_OUT, loop=True))
    runner.start()
    assert wait_for(lambda: runner.stats.frames >= 5, timeout=60)
    assert runner.running
    runner.stop()
    assert not runner.running and ended == [None]
    assert all(not thread.is_alive() for thread in runner.threads())
    assert wait_for(lambda: stage_threads() == [], timeout=5), stage_threads()
    snapshot = runner.stats.snapshot(0)
    assert snapshot["frames"] == 0 and snapshot["fps"] == 0 and snapshot["latency_ms"]["inference"] == 0


def test_realtime_drops_late_frames_when_detection_is_slower_than_the_video(make_video, demo_detector):
    video = make_video(frames=40, fps=500)  # due every 2 ms: detection cannot keep up
    runner, ended = make_runner(video, demo_detector, replace(FLAT_OUT, realtime=True))
    runner.start()
    assert wait_for(lambda: ended, timeout=60)
    snapshot = runner.stats.snapshot(0)
    assert snapshot["dropped"] > 0 and snapshot["frames"] > 0
    assert snapshot["frames"] + snapshot["dropped"] == 40


class SlowSource:
    """A real FrameSource that delivers frames no faster than one per `seconds` (a slow decoder or camera)."""

    def __init__(self, path, seconds: float, loop: bool = False):
        self.inner, self.seconds, self.loop = FrameSource(path, loop=loop), seconds, loop
        self.fps, self.paces_itself, self.published = self.inner.fps, False, self.inner.published

    def read(self, timeout: float):
        if timeout < self.seconds:
            time.sleep(timeout)
            raise queue.Empty
        time.sleep(self.seconds)
        return self.inner.read(timeout)

    def close(self):
        self.inner.close()


def test_realtime_never_starves_when_decoding_is_slower_than_the_video(make_video, demo_detector):
    video = make_video(frames=12, fps=50)  # due every 20 ms, delivered every 60 ms
    runner, ended = make_runner(video, demo_detector, replace(FLAT_OUT, realtime=True),
                                open_source=lambda loop: SlowSource(video, 0.06))
    runner.start()
    assert wait_for(lambda: ended, timeout=60)
    # Each late frame had nothing newer behind it: all are shown, none dropped.
    assert runner.stats.frames == 12 and runner.stats.dropped == 0


def test_handoff_replaces_a_stale_item_or_waits_for_the_slot():
    handoff = Handoff()
    assert handoff.put("a", replace=True) is False
    assert handoff.put("b", replace=True) is True  # "a" was never taken: dropped
    assert handoff.take(0.1) == "b" and handoff.take(0.01) is None
    handoff.put("c", replace=False)
    done = threading.Event()
    threading.Thread(target=lambda: (handoff.put("d", replace=False), done.set()), daemon=True).start()
    assert not done.wait(0.3)  # the slot is full: the writer waits
    assert handoff.take(0.1) == "c"
    assert done.wait(2) and handoff.take(0.1) == "d"
    handoff.put("e", replace=False)
    threading.Thread(target=lambda: handoff.put("f", replace=False), daemon=True).start()
    handoff.close()  # wakes a waiting writer; what is left is still taken
    assert handoff.take(0.5) in ("e", "f")


def test_a_capped_viewer_takes_fewer_frames_than_are_published():
    """A viewer capped at 10 fps gets at most 10 frames a second (plus the first and the last), however loaded.

    The bound is on counts over the time that really passed (a loaded machine only makes it looser); the
    uncapped viewer beside it takes every one of the 100 frames, handed over one at a time.
    """
    hub = FrameHub(max_viewer_fps=10)
    received = {"capped": 0, "free": 0}
    taken = threading.Condition()

    def watch(name, frames):
        for _ in frames:
            with taken:
                received[name] += 1
                taken.notify_all()

    started = time.monotonic()
    capped = threading.Thread(target=watch, args=("capped", hub.frames()))
    capped.start()
    free = threading.Thread(target=watch, args=("free", hub.frames(max_fps=0)))
    free.start()
    assert wait_for(lambda: hub.viewers == 2, timeout=5)
    for sequence in range(1, 101):
        hub.publish(b"jpeg")
        with taken:
            assert taken.wait_for(lambda: received["free"] >= sequence, timeout=10)
        time.sleep(0.01)
    hub.close()
    capped.join(5)
    free.join(5)
    elapsed = time.monotonic() - started
    assert received["free"] == 100
    # The first comes at once, then one per interval; after the close, the frame published last comes unpaced.
    assert 1 <= received["capped"] <= 10 * elapsed + 2 < 100


def test_a_render_failure_ends_the_stream_with_its_error(make_video, demo_detector):
    """Flat out the detect thread waits for the render slot: a dead render stage must release it."""
    runner, ended = make_runner(make_video(frames=30), demo_detector, replace(FLAT_OUT, loop=True))

    def broken_render(*args, **kwargs):
        time.sleep(0.5)  # long enough for the detect thread to fill the slot and wait behind it
        raise RuntimeError("no JPEG today")

    runner.pipeline.render = broken_render
    runner.start()
    assert wait_for(lambda: ended, timeout=30)
    assert ended == ["stream failed: no JPEG today"]
    assert wait_for(lambda: stage_threads() == [], timeout=5), stage_threads()


def test_the_last_frame_before_close_still_reaches_viewers():
    """A video that ends publishes its last frame and closes the hub at once: viewers must still get it."""
    hub = FrameHub()
    hub.publish(b"\xff\xd8last\xff\xd9")
    hub.close()
    parts = list(hub.frames(max_fps=0))
    assert len(parts) == 1 and b"last" in parts[0]
    assert hub.wait_newer(hub.published, 5.0) == (hub.published, None)  # closed: no wait, nothing newer
