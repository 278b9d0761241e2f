"""The model the stream runs and the settings it runs with; what runs is the policy's (server.models.policy).

CurrentModel holds the adopted model, its validated settings and its ModelRuntime, asks the policy what runs and
whether the engine timing is wanted, and starts that timing. The service only routes: it asks this object and
swaps it under its lock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from server.models.backends import PRECISIONS_BY_ENGINE
from server.models.info import ModelInfo
from server.models.ncnn import NcnnBuild
from server.models.policy import wants_timing, with_engine
from server.models.runtime import ModelRuntime
from server.models.tuning.job import EngineTiming, TimingRequest
from server.vision.engines import AUTO, ONNXRUNTIME
from server.vision.settings import IMGSZ_CHOICES, Settings, apply_changes, options_for

logger = logging.getLogger(__name__)

Frames = Callable[[int], list[np.ndarray]]  # a source's calibration_frames(count)


class CurrentModel:
    """The adopted model's engines (fp32, int8 once made, NCNN) and the validated settings; swapped, never edited."""

    def __init__(self, timing: EngineTiming, engine: str = Settings.engine, cores: int | None = None):
        self.timing = timing
        self.engine_at_start = engine
        self.cores = cores or os.cpu_count() or 1
        self.settings = apply_changes(Settings(), {"engine": engine}, PRECISIONS_BY_ENGINE)  # a bad --engine
        self.runtime: ModelRuntime | None = None
        self.onnx_path: Path | None = None
        self.info: ModelInfo | None = None

    def current(self) -> Settings:
        """The settings now (the producer asks on every frame)."""
        return self.settings

    def imgsz_choices(self) -> tuple[int, ...]:
        if self.info is not None and self.info.input_hw is not None:
            return (self.info.imgsz,)
        return IMGSZ_CHOICES

    def offered(self) -> tuple[dict, dict]:
        """The engines (and their precisions) the model offers, and why an engine is left out; every engine's
        precisions without a model."""
        return self.runtime.backends.offered() if self.runtime is not None else (PRECISIONS_BY_ENGINE, {})

    def options(self) -> dict:
        return options_for(self.offered()[0], self.imgsz_choices())

    def described(self, model: dict | None) -> dict | None:
        """Add the engines the model offers to its description, and why NCNN is not among them if it is not."""
        if model is not None and self.runtime is not None:
            offered, why_not = self.offered()
            model.update(engines=offered, ncnn_unavailable=why_not.get("ncnn"))
        return model

    def active(self) -> dict:
        """What runs for the settings now: engine and precision (int8 only once made)."""
        if self.runtime is None:
            return {"engine": ONNXRUNTIME, "active": "fp32", "threads": self.settings.threads}
        key = self.runtime.policy.key_for(self.settings)
        return {"engine": key.engine, "active": key.precision, "threads": key.threads}

    def timing_status(self) -> dict:
        """The engine timing (running, its table) and what runs now, as status' `precision` shows them."""
        return {**self.timing.status(self.onnx_path), **self.active()}

    def adopt(self, onnx_path: Path, info: ModelInfo, ncnn: NcnnBuild | None = None) -> None:
        """Run this model from now on, at the size it was trained or exported for when that is offered.

        ncnn is its NCNN build when acceptance just wrote it; a re-adopted model's is checked when first asked for.
        """
        self.timing.forget()
        self.onnx_path, self.info = Path(onnx_path), info
        self.runtime = ModelRuntime(self.onnx_path, lambda: self.timing.ready(self.onnx_path), ncnn=ncnn,
                                    verdict=lambda: self.timing.verdict(self.onnx_path), turns=self.timing.turns)
        choices = self.imgsz_choices()
        imgsz = info.imgsz if info.imgsz in choices else choices[-1]
        changes = {"imgsz": imgsz, "classes": None}
        offered, why_not = self.offered()
        if self.settings.engine != AUTO and self.settings.precision not in offered.get(self.settings.engine, ()):
            # the new model lacks the engine or precision in force
            changes.update(engine=self.engine_at_start, precision=Settings.precision)
        self.settings = apply_changes(self.settings, changes, offered, choices, len(info.classes), why_not)
        self._warn_if_off_size()

    def _warn_if_off_size(self) -> None:
        # Measured on a slimmed model (docs/slimming.md): distilled at 320 it agreed 0.83 with its teacher at 320
        # and 0.58 at 640. The user's size wins; the log says what it may cost.
        if self.info is not None and self.settings.imgsz != self.info.imgsz:
            logger.warning("the model runs at %d px, not the %d px it was trained or exported at: its detections "
                           "may be fewer or worse (set imgsz %d to run it at its own size)",
                           self.settings.imgsz, self.info.imgsz, self.info.imgsz)

    def update(self, changes: dict) -> Settings:
        """Validate and apply a change (SettingsError when invalid); return the settings it replaced.

        A new min_agreement re-judges the rows already measured (no new timing).
        """
        class_count = len(self.info.classes) if self.info else 0
        old = self.settings
        offered, why_not = self.offered()
        changes = with_engine(old, changes, offered) if isinstance(changes, dict) else changes
        self.settings = apply_changes(old, changes, offered, self.imgsz_choices(), class_count, why_not)
        if self.settings.imgsz != old.imgsz:
            self._warn_if_off_size()
        if self.onnx_path is not None and self.settings.min_agreement != old.min_agreement:
            self.timing.rejudge(self.onnx_path, self.settings.min_agreement)
        return old

    def forget(self) -> None:
        """No model any more; engine and precision go back to their defaults."""
        self.timing.forget()
        self.runtime = self.onnx_path = self.info = None
        self.settings = apply_changes(self.settings, {"engine": self.engine_at_start, "precision": Settings.precision},
                                      PRECISIONS_BY_ENGINE)

    def wants_timing(self) -> bool:
        return self.runtime is not None and wants_timing(self.settings)

    def time_engines(self, frames: Frames) -> None:
        """Start the device's engine timing on a source's frames if the settings want it (it runs once per model
        and device: a cached verdict starts nothing). The reference row runs at the threads the settings ask for."""
        if not self.wants_timing():
            return
        settings = self.settings
        threads = self.runtime.policy.timing_threads(settings, self.cores)
        request = TimingRequest(settings.imgsz, settings.min_agreement, threads)
        self.timing.start(self.onnx_path, frames, request, self.runtime.backends, self.cores)
