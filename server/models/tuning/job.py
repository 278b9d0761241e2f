"""The device's engine timing of the current model, one background job: int8 recipes, every engine, auto's pick.

It builds and judges ONNX Runtime's int8 recipes and times them with every other engine the model offers (NCNN
fp32/fp16, NCNN int8 made from the same calibration frames) in the same rounds (server.models.tuning.tune), and
caches the outcome per model and device: the int8 model precision int8 runs and the row engine `auto` runs.

One timing at a time, on a server.jobs.Worker that stop, reset and a new upload stop and join (cancel()), so no
timing ever reads files that are being replaced or deleted. A new min_agreement re-judges the rows measured.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from server.jobs import JobBoard, Worker
from server.models import choice
from server.models.backends import Backends
from server.models.backends.base import Cancelled
from server.models.tuning.progress import Progress
from server.models.tuning.recipes import DEFAULT_RECIPES, RECIPES_BY_NAME
from server.models.tuning.tune import (
    Engines,
    TimingCancelled,
    TimingHooks,
    TimingRequest,
    TuneReport,
    cached_tuning,
    int8_path_for,
    rejudge,
    report_path_for,
    time_engines,
)
from server.storage import DiskSpace, InsufficientStorage, is_disk_full
from server.vision.detector import Detector
from server.vision.memory import release_freed_memory
from server.vision.sources.base import CALIBRATION_FRAMES
from server.vision.turns import InferenceTurns

logger = logging.getLogger(__name__)

__all__ = ["TIMING_JOB", "EngineTiming", "TimingRequest", "other_engines"]

TIMING_JOB = "engine-timing"  # the job's kind on the JobBoard (status' job.kind) and its thread's name
CANCEL_JOIN_S = 120.0  # one quantize_static call cannot be interrupted; a large model's takes this long at worst
# At its peak the timing's work folder holds the pre-processed model and one calibration-augmented copy per
# calibration method (each about the fp32 model's size) and every recipe's int8 model (about 0.3 of it),
# while those are copied out beside the fp32 model.
INT8_BYTES_PER_RECIPE = 2 * 0.3


def timing_bytes_for(fp32: Path, recipes: list[str] | None) -> int:
    """Bytes an engine timing of fp32 takes on disk at its peak, for the free-space check before it starts."""
    chosen = [RECIPES_BY_NAME[name] for name in recipes] if recipes else list(DEFAULT_RECIPES)
    methods = {recipe.calibration for recipe in chosen}
    factor = 1 + len(methods) + INT8_BYTES_PER_RECIPE * len(chosen)
    return int(fp32.stat().st_size * factor)


def remove_partial_timing(out_path: Path) -> list[str]:
    """Delete what a timing that failed half-way kept beside the fp32 model (int8 candidates, a partial report)."""
    report = report_path_for(out_path)
    doomed = [*out_path.parent.glob(f"{out_path.stem}.*.onnx"), report, report.with_name(report.name + ".partial")]
    removed = []
    for path in doomed:
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def other_engines(backends: Backends, threads: int, cores: int,
                  cancel: threading.Event | None) -> Callable[[list[np.ndarray], Progress], Engines]:
    """Return what makes and lists auto's other rows (TimingHooks.engines): each backend prepares what it builds
    from the calibration frames (NCNN int8), then every engine x precision x threads offered (choice.candidate_keys)."""

    def engines(tensors: list[np.ndarray], progress: Progress) -> Engines:
        try:
            backends.prepare(tensors, threads, progress, cancel)
        except Cancelled as exc:
            raise TimingCancelled(str(exc)) from None
        keys = choice.candidate_keys(backends.offered()[0], threads, cores)
        return {choice.row_name(key): (key, lambda key=key: Detector(backends.load(backends.run(key))))
                for key in keys}

    return engines


class EngineTiming:
    """The engine timing of a model on this device (its int8 model and auto's verdict): cached or run, one at a time."""

    def __init__(self, jobs: JobBoard, recipes: list[str] | None = None, space: DiskSpace | None = None):
        unknown = sorted(set(recipes or ()) - set(RECIPES_BY_NAME))
        if unknown:
            known = ", ".join(RECIPES_BY_NAME)
            raise ValueError(f"unknown int8 recipe(s) {', '.join(unknown)}; choose from {known}")
        self.jobs = jobs
        self.recipes = recipes or None
        self.space = space  # checked before a timing starts; a disk that fills during one fails it cleanly
        self.turns = InferenceTurns()  # the job's timed inferences and the stream's take turns (CurrentModel)
        self.error: str | None = None
        self.worker = Worker(TIMING_JOB, "the engine timing")
        self._lock = threading.Lock()
        self._wanted_agreement: dict[Path, float] = {}  # the bar asked for while a timing ran
        self._known: dict[Path, TuneReport | None] = {}  # the producer asks every frame

    def _cached(self, fp32: Path) -> TuneReport | None:
        if fp32 not in self._known:
            self._known[fp32] = cached_tuning(fp32)
        return self._known[fp32]

    def forget(self) -> None:
        """Drop what is known about cached models (their files were deleted or replaced)."""
        self._known.clear()
        self._wanted_agreement.clear()

    def ready(self, fp32: Path) -> Path | None:
        """Return the kept int8 model of fp32 if this CPU has one cached, else None."""
        report = self._cached(fp32)
        return Path(report.path) if report and report.path else None

    def verdict(self, fp32: Path) -> dict | None:
        """Return what `auto` runs for fp32 on this device ({engine, precision, threads, row, why}) once timed."""
        report = self._cached(fp32)
        return report.auto or None if report else None

    def report(self, fp32: Path) -> dict | None:
        report = self._cached(fp32)
        return report.as_dict() if report else None

    def building(self) -> bool:
        return self.worker.running()

    def status(self, fp32: Path | None) -> dict:
        """Whether the job runs, and its table once there is one (what runs is CurrentModel.active's to say).

        `int8` is the table's former name, kept for one release (docs/api.md).
        """
        table = self.report(fp32) if fp32 else None
        return {"building": self.building(), "timing": table, "int8": table}

    def start(self, fp32: Path, frames: Callable[[int], list[np.ndarray]], request: TimingRequest,
              backends: Backends | None = None, cores: int = 1) -> None:
        """Start timing in the background unless it is cached or already running.

        frames(count) gives the calibration images (a source's; called on the timing's thread: a file decodes);
        backends are the model's other engines to time besides ONNX Runtime's (None: ONNX Runtime only).
        """
        with self._lock:
            if self._cached(fp32) or self.building() or not self._room_for(fp32):
                return
            if not self.jobs.begin(TIMING_JOB, "timing the engines on this device"):
                return
            self.error = None
            self.worker.start(self._run, fp32, frames, replace(request, recipes=self.recipes), backends, cores)

    def _room_for(self, fp32: Path) -> bool:
        """Check the disk before a timing; without room it does not start and error says why."""
        if self.space is None:
            return True
        try:
            self.space.require(timing_bytes_for(fp32, self.recipes))
        except InsufficientStorage as exc:
            self.error = f"the engine timing did not start: {exc}"
            return False
        return True

    def _progress(self, fp32: Path, stage: str, progress: float, message: str) -> None:
        """Show progress, first checking that the next step's files (about one model each) still fit."""
        if self.space is not None:  # between steps too: another program may be filling the disk
            self.space.require(fp32.stat().st_size)
        self.jobs.update(TIMING_JOB, stage, progress, message)

    def _disk_guard(self, fp32: Path):
        """What the timing's work runs under: a failure on a disk left with less than a model's size is a full disk."""
        if self.space is None:
            return contextlib.nullcontext()
        return self.space.guard(timing_bytes_for(fp32, self.recipes), low_bytes=fp32.stat().st_size)

    def cancel(self, timeout: float = CANCEL_JOIN_S) -> bool:
        """Ask a running timing to stop and wait for it; return False if it is still running after timeout."""
        return self.worker.stop(timeout)

    def rejudge(self, fp32: Path, min_agreement: float) -> None:
        """Apply a new min_agreement to the rows already measured (after the timing, if one runs)."""
        with self._lock:
            if self.building():
                self._wanted_agreement[fp32] = min_agreement
                return
        report = self._cached(fp32)
        if report is not None and abs(report.min_agreement - min_agreement) > 1e-9:
            self._known[fp32] = rejudge(report, int8_path_for(fp32), min_agreement)

    def _run(self, fp32: Path, frames: Callable[[int], list[np.ndarray]], request: TimingRequest,
             backends: Backends | None, cores: int, stop: threading.Event) -> None:
        try:
            hooks = TimingHooks(
                on_progress=lambda stage, progress, message: self._progress(fp32, stage, progress, message),
                cancel=stop,
                disk_guard=self._disk_guard(fp32),
                engines=backends and other_engines(backends, request.threads, cores, stop),
                turns=self.turns,
            )
            report = time_engines(fp32, frames(CALIBRATION_FRAMES), request, hooks)
            wanted = self._wanted_agreement.pop(fp32, request.min_agreement)
            if abs(wanted - request.min_agreement) > 1e-9:
                report = rejudge(report, int8_path_for(fp32), wanted)
            if not stop.is_set():
                self._known[fp32] = report
        except TimingCancelled:
            logger.info("the engine timing was cancelled")
        except Exception as exc:  # shown in status; the stream keeps running in fp32
            self._failed(fp32, exc)
        finally:
            release_freed_memory("the engine timing ended")  # its sessions, calibration and quantized models
            self.jobs.end(TIMING_JOB)

    def _failed(self, fp32: Path, exc: Exception) -> None:
        if self.space is not None and (is_disk_full(exc) or isinstance(exc, InsufficientStorage)):
            removed = remove_partial_timing(int8_path_for(fp32))
            logger.warning("the engine timing ran out of disk space; removed %s", removed or "nothing")
            self.error = f"the engine timing failed: {self.space.full(timing_bytes_for(fp32, self.recipes))}"
            return
        logger.exception("the engine timing failed")
        self.error = f"the engine timing failed: {exc}"
