"""What recording events costs the producer: the tap's time per frame on the render thread, and fps with and without.

    python -m bench.events_cost [--frames 300] [--imgsz 320] [--rounds 3] [--min-frames 5]

Streams the demo video flat out (realtime off, no loop) through the server's own StreamRunner, alternating runs
without events (no tap) and with them (EventRecorder's tap, a real store in a temporary folder, its writer
thread saving), and prints per round: frames, fps, render-thread ms per frame (draw + encode, plus the tap when
on), the tap's mean / p50 / p99 / max ms (without events: an empty tap timed the same way, the floor thread
switches set on the machine), the render thread's CPU time in the tap
(time.thread_time: without the waits for the GIL or a core), events stored and saves dropped.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from server.demo import DEMO_ONNX
from server.demo.video import write_demo_video
from server.events.recorder import EventRecorder
from server.events.settings import EventSettings
from server.events.store import EventStore
from server.models.identify import inspect_model
from server.vision.detector import Detector
from server.vision.pipeline import FramePipeline
from server.vision.settings import Settings
from server.vision.sources import FileChoice, probe_video
from server.vision.stream import StreamRunner
from server.vision.tracker import Tracker

logger = logging.getLogger(__name__)


def noop(*args) -> None:
    """The tap of a run without events."""


def run_once(video: Path, detector: Detector, names: list[str], settings: Settings, frames: int,
             recorder: EventRecorder | None) -> dict:
    """Stream `frames` frames of the video once; return what the render thread spent per frame."""
    info = probe_video(video)
    pipeline = FramePipeline(lambda s: detector, names, tracker_factory=Tracker)
    session = recorder.begin(video.name, names, info.fps, live=False) if recorder else None
    render_ms, tap_ms, tap_cpu_ms, published = [], [], [], [0]
    runner: StreamRunner | None = None

    def tap(item, result, published_at):
        render_ms.append(result.timings_ms["draw"] + result.timings_ms["encode"])
        # Without events an empty call is timed the same way: the floor set by thread switches on this machine.
        started, cpu_started = time.perf_counter(), time.thread_time()
        (session.tap if session is not None else noop)(item, result, published_at)
        tap_ms.append((time.perf_counter() - started) * 1000)
        tap_cpu_ms.append((time.thread_time() - cpu_started) * 1000)
        published[0] += 1
        if published[0] >= frames:
            runner.stop_event.set()

    runner = StreamRunner(FileChoice(video).open, pipeline, lambda: settings, lambda error: None, on_publish=tap)
    started = time.perf_counter()
    runner.start()
    runner.thread.join()
    seconds = time.perf_counter() - started
    if recorder is not None:
        recorder.stop()
    return {"frames": published[0], "fps": published[0] / seconds, "render_ms": float(np.mean(render_ms)),
            "tap_ms": np.array(tap_ms), "tap_cpu_ms": float(np.mean(tap_cpu_ms)),
            "events": recorder.store.summary()["count"] if recorder else 0,
            "dropped": recorder.dropped if recorder else 0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-frames", type=int, default=EventSettings.min_frames)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        video = write_demo_video(Path(folder) / "demo.mp4")
        names = inspect_model(DEMO_ONNX, None).classes
        settings = Settings(imgsz=args.imgsz, realtime=False, loop=False)
        detector = Detector(DEMO_ONNX, threads=settings.threads)
        detector.warm_up((args.imgsz, args.imgsz))
        print(f"{'round':>5} {'events':>6} {'frames':>6} {'fps':>6} {'render ms':>9} {'tap mean':>8} {'p50':>6} "
              f"{'p99':>6} {'max':>6} {'tap cpu':>7} {'stored':>6} {'dropped':>7}")
        for round_number in range(1, args.rounds + 1):
            for on in (False, True):
                recorder = None
                if on:
                    store = EventStore(Path(folder) / f"uploads-{round_number}")
                    recorder = EventRecorder(store, EventSettings(min_frames=args.min_frames))
                row = run_once(video, detector, names, settings, args.frames, recorder)
                tap = row["tap_ms"]
                stats = [f"{tap.mean():8.3f}", *(f"{np.percentile(tap, q):6.3f}" for q in (50, 99)),
                         f"{tap.max():6.2f}", f"{row['tap_cpu_ms']:7.3f}"]
                print(f"{round_number:>5} {'on' if on else 'off':>6} {row['frames']:>6} {row['fps']:6.1f} "
                      f"{row['render_ms'] + tap.mean():9.2f} {' '.join(stats)} "
                      f"{row['events']:>6} {row['dropped']:>7}")


if __name__ == "__main__":
    main()
