"""The on-device tuning of the current model, one background job: the int8 recipes and the `auto` engine choice.

It builds and judges ONNX Runtime's int8 recipes and times them with every other engine the model offers (NCNN
fp32/fp16, NCNN int8 made from the same calibration frames) in the same rounds (server.models.tuning.tune), and
caches the outcome per model and device: the int8 model the int8 setting runs and the row `auto` runs.

One build at a time, on a thread that stop, reset and a new upload cancel and join (cancel()), so no tuning ever
reads files that are being replaced or deleted. A new min_agreement re-judges the recipes already measured.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from server.jobs import JobBoard, join_worker
from server.models import choice
from server.models.tuning.tune import (
    Engines,
    EnginesFor,
    Progress,
    TuneReport,
    TuningCancelled,
    cached_tuning,
    int8_path_for,
    rejudge,
    report_path_for,
    tune,
)
from server.models.tuning.recipes import DEFAULT_RECIPES, RECIPES_BY_NAME
from server.models.ncnn.int8 import Int8Cancelled, build_ncnn_int8
from server.models.runtime import ModelRuntime
from server.storage import DiskSpace, InsufficientStorage, is_disk_full
from server.vision.detector import Detector
from server.vision.memory import release_freed_memory
from server.vision.sources.base import CALIBRATION_FRAMES
from server.vision.turns import InferenceTurns

logger = logging.getLogger(__name__)

CANCEL_JOIN_S = 120.0  # one quantize_static call cannot be interrupted; a large model's takes this long at worst
# At its peak the tuning's work folder holds the pre-processed model and one calibration-augmented copy per
# calibration method (each about the fp32 model's size) and every recipe's int8 model (about 0.3 of it),
# while those are copied out beside the fp32 model.
INT8_BYTES_PER_RECIPE = 2 * 0.3


def tuning_bytes_for(fp32: Path, recipes: list[str] | None) -> int:
    """Bytes an int8 tuning of fp32 takes on disk at its peak, for the free-space check before it starts."""
    chosen = [RECIPES_BY_NAME[name] for name in recipes] if recipes else list(DEFAULT_RECIPES)
    methods = {recipe.calibration for recipe in chosen}
    factor = 1 + len(methods) + INT8_BYTES_PER_RECIPE * len(chosen)
    return int(fp32.stat().st_size * factor)


def remove_partial_tuning(out_path: Path) -> list[str]:
    """Delete what a tuning that failed half-way kept beside the fp32 model (candidates, a partial report)."""
    report = report_path_for(out_path)
    doomed = [*out_path.parent.glob(f"{out_path.stem}.*.onnx"), report, report.with_name(report.name + ".partial")]
    removed = []
    for path in doomed:
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def auto_engines(runtime: ModelRuntime, threads: int, cores: int) -> EnginesFor:
    """Return what makes and lists auto's other rows for runtime: NCNN int8 first (from the calibration frames),
    then every engine x precision x threads it offers (choice.candidate_keys)."""

    def engines(tensors: list[np.ndarray], progress: Progress, cancel: threading.Event) -> Engines:
        build = runtime.ncnn()
        if build.files is not None:
            try:
                build_ncnn_int8(build, tensors, threads=threads, on_progress=progress, cancel=cancel)
            except Int8Cancelled:
                raise TuningCancelled("cancelled while making the NCNN int8 model") from None
            except Exception as error:  # NCNN int8 is one row less, not a failed tuning
                logger.warning("the NCNN int8 model could not be made: %s", error)
        offered, _ = runtime.offered()
        keys = choice.candidate_keys(offered, threads, cores)
        return {choice.row_name(key): (key, lambda key=key: Detector(runtime.engine_for(key))) for key in keys}

    return engines


class TuningJob:
    """The tuning of a model on this device (its int8 model and auto's verdict): found cached or run, one at a time."""

    def __init__(self, jobs: JobBoard, recipes: list[str] | None = None, space: DiskSpace | None = None):
        unknown = sorted(set(recipes or ()) - set(RECIPES_BY_NAME))
        if unknown:
            known = ", ".join(RECIPES_BY_NAME)
            raise ValueError(f"unknown int8 recipe(s) {', '.join(unknown)}; choose from {known}")
        self.jobs = jobs
        self.recipes = recipes or None
        self.space = space  # checked before a build starts; a disk that fills during one fails it cleanly
        self.turns = InferenceTurns()  # the job's timed inferences and the stream's take turns (CurrentModel)
        self.error: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._wanted_agreement: dict[Path, float] = {}  # the bar asked for while a build ran
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
        """Return the tuned int8 model of fp32 if this CPU has one cached, else None."""
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
        return self._thread is not None and self._thread.is_alive()

    def status(self, fp32: Path | None) -> dict:
        """Whether the job runs, and its table once there is one (what runs is CurrentModel.active's to say)."""
        return {"building": self.building(), "int8": self.report(fp32) if fp32 else None}

    def build(self, fp32: Path, frames: Callable[[int], list[np.ndarray]], imgsz: int, min_agreement: float,
              threads: int, engines: EnginesFor | None = None) -> None:
        """Start tuning in the background unless it is cached or already running.

        frames(count) gives the calibration images (a source's; called on the tuning thread: a file decodes);
        engines makes and lists auto's other rows (tune's engines), called on the tuning thread with the
        tuning's cancel event.
        """
        with self._lock:
            if self._cached(fp32) or self.building() or not self._room_for(fp32):
                return
            if not self.jobs.begin("quantize", "timing the engines on this device"):
                return
            self.error = None
            self._cancel = threading.Event()
            self._thread = threading.Thread(
                target=self._build, args=(fp32, frames, imgsz, min_agreement, threads, engines, self._cancel),
                name="int8-tuning", daemon=True,
            )  # fmt: skip
            self._thread.start()

    def _room_for(self, fp32: Path) -> bool:
        """Check the disk before a build; without room the build does not start and error says why."""
        if self.space is None:
            return True
        try:
            self.space.require(tuning_bytes_for(fp32, self.recipes))
        except InsufficientStorage as exc:
            self.error = f"int8 tuning did not start: {exc}"
            return False
        return True

    def _progress(self, fp32: Path, stage: str, progress: float, message: str) -> None:
        """Show progress, first checking that the next step's files (about one model each) still fit."""
        if self.space is not None:  # between steps too: another program may be filling the disk
            self.space.require(fp32.stat().st_size)
        self.jobs.update("quantize", stage, progress, message)

    def _disk_guard(self, fp32: Path):
        """What the tuning's work runs under: a failure on a disk left with less than a model's size is a full disk."""
        if self.space is None:
            return contextlib.nullcontext()
        return self.space.guard(tuning_bytes_for(fp32, self.recipes), low_bytes=fp32.stat().st_size)

    def cancel(self, timeout: float = CANCEL_JOIN_S) -> bool:
        """Ask a running build to stop and wait for it; return False if it is still running after timeout."""
        with self._lock:
            thread = self._thread
            self._cancel.set()
        return join_worker(thread, timeout, "int8 tuning")

    def rejudge(self, fp32: Path, min_agreement: float) -> None:
        """Apply a new min_agreement to the recipes already measured (after the build, if one runs)."""
        with self._lock:
            if self.building():
                self._wanted_agreement[fp32] = min_agreement
                return
        report = self._cached(fp32)
        if report is not None and abs(report.min_agreement - min_agreement) > 1e-9:
            self._known[fp32] = rejudge(report, int8_path_for(fp32), min_agreement)

    def _build(self, fp32: Path, frames: Callable[[int], list[np.ndarray]], imgsz: int, min_agreement: float,
               threads: int, engines: EnginesFor | None, cancel: threading.Event) -> None:
        try:
            report = tune(
                fp32,
                frames(CALIBRATION_FRAMES),
                imgsz,
                int8_path_for(fp32),
                min_agreement=min_agreement,
                threads=threads,
                recipes=self.recipes,
                on_progress=lambda stage, progress, message: self._progress(fp32, stage, progress, message),
                cancel=cancel,
                disk_guard=self._disk_guard(fp32),
                engines=engines and (lambda tensors, progress: engines(tensors, progress, cancel)),
                turns=self.turns,
            )
            wanted = self._wanted_agreement.pop(fp32, min_agreement)
            if abs(wanted - min_agreement) > 1e-9:
                report = rejudge(report, int8_path_for(fp32), wanted)
            if not cancel.is_set():
                self._known[fp32] = report
        except TuningCancelled:
            logger.info("int8 tuning cancelled")
        except Exception as exc:  # shown in status; the stream keeps running in fp32
            if self.space is not None and (is_disk_full(exc) or isinstance(exc, InsufficientStorage)):
                removed = remove_partial_tuning(int8_path_for(fp32))
                logger.warning("int8 tuning ran out of disk space; removed %s", removed or "nothing")
                self.error = f"int8 tuning failed: {self.space.full(tuning_bytes_for(fp32, self.recipes))}"
                return
            logger.exception("int8 tuning failed")
            self.error = f"int8 tuning failed: {exc}"
        finally:
            release_freed_memory("the tuning ended")  # its sessions, calibration and quantized models
            self.jobs.end("quantize")
