"""The model the stream runs and the settings it runs with: the engine policy in one place.

Which engine and precision run for the settings (ModelRuntime.key_for: auto's verdict, NCNN, ONNX Runtime, int8 once
tuned), when the on-device tuning is wanted and how many threads it times with. The service only routes: it asks
this object and swaps it under its lock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from server.models.choice import reference_key
from server.models.info import ModelInfo
from server.models.ncnn import NcnnBuild
from server.models.runtime import ModelRuntime
from server.models.tuning.job import TuningJob, auto_engines
from server.vision.engines import AUTO, ONNXRUNTIME
from server.vision.settings import IMGSZ_CHOICES, Settings, apply_changes, options_for

logger = logging.getLogger(__name__)

Frames = Callable[[int], list[np.ndarray]]  # a source's calibration_frames(count)


def wants_tuning(settings: Settings) -> bool:
    """Whether the settings need the on-device timing: engine auto, or ONNX Runtime int8 (its recipes)."""
    return settings.engine == AUTO or (settings.engine == ONNXRUNTIME and settings.precision == "int8")


class CurrentModel:
    """The adopted model's engines (fp32, int8 once tuned, NCNN) and the validated settings; swapped, never edited."""

    def __init__(self, tuning: TuningJob, engine: str = Settings.engine, cores: int | None = None):
        self.tuning = tuning
        self.engine_at_start = engine
        self.cores = cores or os.cpu_count() or 1
        self.settings = apply_changes(Settings(), {"engine": engine})  # SettingsError names a bad --engine
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

    def offered(self) -> tuple[dict | None, dict | None]:
        """The engines (and their precisions) the model offers, and why an engine is left out; None without a model."""
        return self.runtime.offered() if self.runtime is not None else (None, None)

    def options(self) -> dict:
        return options_for(self.imgsz_choices(), self.offered()[0])

    def described(self, model: dict | None) -> dict | None:
        """Add the engines the model offers to its description, and why NCNN is not among them if it is not."""
        if model is not None and self.runtime is not None:
            offered, why_not = self.runtime.offered()
            model.update(engines=offered, ncnn_unavailable=why_not.get("ncnn"))
        return model

    def active(self) -> dict:
        """What runs for the settings now: engine and precision (int8 only once tuned)."""
        if self.runtime is None:
            return {"engine": ONNXRUNTIME, "active": "fp32", "threads": self.settings.threads}
        key = self.runtime.key_for(self.settings)
        return {"engine": key.engine, "active": key.precision, "threads": key.threads}

    def tuning_status(self) -> dict:
        """The on-device tuning (running, its table) and what runs now, as status' `precision` shows them."""
        return {**self.tuning.status(self.onnx_path), **self.active()}

    def adopt(self, onnx_path: Path, info: ModelInfo, ncnn: NcnnBuild | None = None) -> None:
        """Run this model from now on, at the size it was trained or exported for when that is offered.

        ncnn is its NCNN build when acceptance just wrote it; a re-adopted model's is checked when first asked for.
        """
        self.tuning.forget()
        self.onnx_path, self.info = Path(onnx_path), info
        self.runtime = ModelRuntime(self.onnx_path, lambda: self.tuning.ready(self.onnx_path), ncnn=ncnn,
                                    verdict=lambda: self.tuning.verdict(self.onnx_path), turns=self.tuning.turns)
        choices = self.imgsz_choices()
        imgsz = info.imgsz if info.imgsz in choices else choices[-1]
        changes = {"imgsz": imgsz, "classes": None}
        offered, why_not = self.runtime.offered()
        if self.settings.engine != AUTO and self.settings.precision not in offered.get(self.settings.engine, ()):
            # the new model lacks the engine or precision in force
            changes.update(engine=self.engine_at_start, precision=Settings.precision)
        self.settings = apply_changes(self.settings, changes, choices, len(info.classes), offered, why_not)
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
        self.settings = apply_changes(old, changes, self.imgsz_choices(), class_count, offered, why_not)
        if self.settings.imgsz != old.imgsz:
            self._warn_if_off_size()
        if self.onnx_path is not None and self.settings.min_agreement != old.min_agreement:
            self.tuning.rejudge(self.onnx_path, self.settings.min_agreement)
        return old

    def forget(self) -> None:
        """No model any more; engine and precision go back to their defaults."""
        self.tuning.forget()
        self.runtime = self.onnx_path = self.info = None
        self.settings = apply_changes(self.settings, {"engine": self.engine_at_start, "precision": Settings.precision})

    def wants_tuning(self) -> bool:
        return self.runtime is not None and wants_tuning(self.settings)

    def tune(self, frames: Frames) -> None:
        """Start the on-device timing on a source's frames if the settings want it (it runs once per model and
        device: a cached verdict starts nothing). The reference row runs at the threads the settings ask for."""
        if not self.wants_tuning():
            return
        settings = self.settings
        threads = reference_key(settings.threads, self.cores).threads
        self.tuning.build(self.onnx_path, frames, settings.imgsz, settings.min_agreement, threads,
                          auto_engines(self.runtime, threads, self.cores))
