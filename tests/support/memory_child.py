"""The memory scenarios of tests/test_memory.py, each run in a fresh process so that only its own work is measured.

    python -m tests.support.memory_child detectors MODEL.onnx WORK_DIR     -> {"growth_mb": ...}
    python -m tests.support.memory_child timing MODEL.onnx WORK_DIR        -> {"held_mb": [...]}

In the test process itself, threads and buffers left by the hundreds of tests before it allocate and free memory
at the same time, so a difference of two readings there says little (it read -54 and +40 MB for one tuning in a full
run). Here the process holds nothing else. Anonymous resident memory (/proc/self/smaps_rollup), never a peak.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np

from server.jobs import JobBoard
from server.models.runtime import ModelRuntime
from server.models.tuning.job import EngineTiming
from server.models.tuning.tune import TimingRequest
from server.vision.settings import Settings
from server.vision.sources.file import sample_frames
from tests.support.helpers import write_video

# engine, precision, input size: each change loads another detector, as a user's settings churn does
SWAPS = [("onnxruntime", "fp32", 640), ("ncnn", "fp32", 320), ("onnxruntime", "fp32", 416),
         ("ncnn", "fp16", 640), ("onnxruntime", "fp32", 320), ("ncnn", "fp32", 416)]
SWAP_ROUNDS = 4
TIMINGS = 3  # as Stop and Start cancel the engine timing and start it again


def anonymous_mb() -> float:
    """This process' anonymous resident memory (heap, arenas, sessions' buffers)."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no Anonymous line in /proc/self/smaps_rollup")


def on_a_new_thread(work) -> None:
    """Every Start makes new threads (each with its own malloc arena): each round runs on one of its own."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def detector_growth(model: Path, work: Path) -> dict:
    """Replace detectors across engines and sizes: once to warm up, then SWAP_ROUNDS times; the memory added."""
    runtime = ModelRuntime(Path(shutil.copy(model, work / "demo.onnx")), lambda: None)  # NCNN written beside it
    if runtime.backends.ncnn.unavailable() is not None:
        raise RuntimeError(f"NCNN unavailable: {runtime.backends.ncnn.unavailable()}")
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)

    def churn():
        for engine, precision, imgsz in SWAPS:
            settings = Settings(engine=engine, precision=precision, imgsz=imgsz, threads=2)
            for _ in range(2):
                runtime.detector_for(settings).detect(frame, imgsz, 0.25, 0.7)

    on_a_new_thread(churn)
    before = anonymous_mb()
    for _ in range(SWAP_ROUNDS):
        on_a_new_thread(churn)
    return {"growth_mb": round(anonymous_mb() - before, 1), "swaps": SWAP_ROUNDS * len(SWAPS)}


class TimingBoard(JobBoard):
    """A job board that says when the timing reaches its timing rounds: every session it compares is loaded."""

    def __init__(self):
        super().__init__()
        self.timing = threading.Event()

    def update(self, kind, stage, progress, message=""):
        super().update(kind, stage, progress, message)
        if stage == "timing":
            self.timing.set()


def timing_held(model: Path, work: Path) -> dict:
    """Start the engine timing and cancel it in its timing rounds, once to warm up (its first run loads the
    quantization modules and their caches for good: 27 MB here), then TIMINGS times; what each of those left held."""
    video = write_video(work / "calibration.mp4", frames=30)
    held = []
    for attempt in range(1 + TIMINGS):
        fp32 = Path(shutil.copy(model, work / f"model-{attempt}.onnx"))
        board = TimingBoard()
        timing = EngineTiming(board, ["u8s8-pc"])
        before = anonymous_mb()
        timing.start(fp32, lambda count: sample_frames(video, count), TimingRequest(320, 0.9, 1))
        if not board.timing.wait(120):
            raise RuntimeError("the engine timing never reached its timing rounds")
        if not timing.cancel():
            raise RuntimeError("the engine timing did not stop")
        held.append(round(anonymous_mb() - before, 1))
    return {"held_mb": held[1:], "warm_up_mb": held[0]}


def main(argv: list[str]) -> None:
    scenario, model, work = argv
    run = {"detectors": detector_growth, "timing": timing_held}[scenario]
    sys.stdout.write(json.dumps(run(Path(model), Path(work))) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
