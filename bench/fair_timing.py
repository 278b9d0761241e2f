"""Is the on-device timing fair while a stream plays? Time the same candidates alone, then beside a playing stream.

    python -m bench.fair_timing [--imgsz 320] [--threads 2] [--recipes u8s8-pc-rr] [--seconds 10]

1. The auto job (server.models.tuning.tune.time_engines with other_engines, as the server runs it) on the demo model and
   frames of the demo video, with nothing else running: each candidate's ms.
2. The demo video streaming in real time on ONNX Runtime fp32 (the producer the server runs, StreamRunner), its rate
   measured alone for --seconds; then the same job beside it, sharing the stream's turns at the CPU
   (server.vision.turns), while the stream's rate is measured again.
It prints per candidate the ms alone and beside the stream (ratio, and each run's noise), and the stream's fps
alone and during the job. Fair: every ratio within the noise; the stream keeps at least half its rate.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness.frames import demo_calibration_frames
from server.demo import DEMO_ONNX
from server.demo.video import write_demo_video
from server.models.choice import reference_key
from server.models.identify import inspect_model
from server.models.runtime import ModelRuntime
from server.models.tuning.job import other_engines
from server.models.tuning.tune import TimingHooks, TimingRequest, machine_info, time_engines
from server.vision.detector import default_threads
from server.vision.pipeline import FramePipeline
from server.vision.settings import Settings
from server.vision.sources.choice import FileChoice
from server.vision.stream import StreamRunner
from server.vision.turns import InferenceTurns


def run_job(model: Path, frames: list, imgsz: int, threads: int, recipes: list[str] | None,
            turns: InferenceTurns | None):
    """The server's auto job on a fresh copy of model (no cached verdict); returns its report."""
    with tempfile.TemporaryDirectory(prefix="fair-timing-") as work:
        copy = Path(work) / model.name
        shutil.copyfile(model, copy)
        engines = other_engines(ModelRuntime(copy, lambda: None).backends, threads, os.cpu_count() or 1, None)
        return time_engines(copy, frames, TimingRequest(imgsz, threads=threads, recipes=recipes),
                            TimingHooks(engines=engines, turns=turns))


def start_stream(model: Path, video: Path, settings: Settings, turns: InferenceTurns) -> StreamRunner:
    runtime = ModelRuntime(model, lambda: None, turns=turns)
    classes = inspect_model(model, trial=None).classes
    runner = StreamRunner(FileChoice(video).open, FramePipeline(runtime.detector_for, classes), lambda: settings,
                          lambda error: None)
    runner.start()
    return runner


def rate_while(runner: StreamRunner, work) -> tuple[float, object]:
    """Frames per second the stream published while work() ran, and what work returned."""
    published, started = runner.hub.published, time.monotonic()
    result = work()
    return (runner.hub.published - published) / (time.monotonic() - started), result


def table(alone, beside, fps_alone: float, fps_during: float) -> str:
    beside_rows = {row.recipe: row for row in beside.rows}
    lines = [f"{'row':22s} {'ms alone':>9s} {'+-':>5s} {'ms beside':>9s} {'+-':>5s} {'ratio':>6s}"]
    for row in alone.rows:
        other = beside_rows.get(row.recipe)
        if row.ms is None or other is None or other.ms is None:
            continue
        lines.append(f"{row.recipe:22s} {row.ms:9.1f} {row.noise or 0:5.2f} {other.ms:9.1f} {other.noise or 0:5.2f} "
                     f"{other.ms / row.ms:6.2f}")
    lines.append(f"stream: {fps_alone:.1f} fps alone, {fps_during:.1f} fps during the job "
                 f"({fps_during / fps_alone:.0%} of its rate)" if fps_alone else "stream: no frames")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_ONNX)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--recipes", default="u8s8-pc-rr", help="comma-separated int8 recipes (empty: all)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the stream's rate alone is measured")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(f"CPU: {machine_info()}; load average {os.getloadavg()[0]:.1f}")
    threads = reference_key(args.threads, os.cpu_count() or 1).threads
    recipes = [r for r in args.recipes.split(",") if r] or None
    frames = demo_calibration_frames()
    alone = run_job(args.model, frames, args.imgsz, threads, recipes, None)
    turns = InferenceTurns()
    with tempfile.TemporaryDirectory(prefix="fair-timing-stream-") as work:
        video = write_demo_video(Path(work) / "demo.mp4", seconds=20)
        settings = Settings(imgsz=args.imgsz, engine="onnxruntime", threads=threads, realtime=True, loop=True)
        runner = start_stream(args.model, video, settings, turns)
        try:
            fps_alone, _ = rate_while(runner, lambda: time.sleep(args.seconds))
            fps_during, beside = rate_while(runner, lambda: run_job(args.model, frames, args.imgsz, threads,
                                                                     recipes, turns))
        finally:
            runner.stop()
    print(f"{args.model.name} at {args.imgsz}, {threads} threads, load average now {os.getloadavg()[0]:.1f}:")
    print(table(alone, beside, fps_alone, fps_during))


if __name__ == "__main__":
    main()
