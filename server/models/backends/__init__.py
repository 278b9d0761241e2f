"""The engines a model runs on, as a registry: one Backend per engine, each saying what it offers and how it loads.

A backend declares the precisions it can run (PRECISIONS_BY_ENGINE), which of them the current model offers and
which are ready now (an int8 model exists only once made on this device), what it builds from the model's ONNX
(NCNN: the translation, and the int8 model from calibration frames: prepare), the file a precision loads, and how
it loads it. What runs for given settings is not decided here but in server.models.policy, from these answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from server.models.backends.base import Backend, EngineRun, Progress
from server.models.backends.ncnn import NcnnBackend
from server.models.backends.onnxruntime import OnnxRuntimeBackend
from server.models.ncnn import NcnnBuild
from server.vision.engines import Engine, EngineKey

BACKEND_TYPES = (OnnxRuntimeBackend, NcnnBackend)  # the first is the default, and the timing's reference
PRECISIONS_BY_ENGINE = {backend.name: backend.precisions for backend in BACKEND_TYPES}


class Backends:
    """The registry for one model: every engine it may run on, ONNX Runtime first."""

    def __init__(self, fp32_path: Path, int8_path: Callable[[], Path | None], ncnn: NcnnBuild | None = None):
        self.fp32_path = Path(fp32_path)
        self.onnxruntime = OnnxRuntimeBackend(self.fp32_path, int8_path)
        self.ncnn = NcnnBackend(self.fp32_path, ncnn)
        self.by_name: dict[str, Backend] = {backend.name: backend for backend in (self.onnxruntime, self.ncnn)}

    @property
    def default(self) -> Backend:
        return self.onnxruntime

    def offered(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        """The precisions each engine offers for this model, and why an engine is left out."""
        offered, why_not = {}, {}
        for name, backend in self.by_name.items():
            reason = backend.unavailable()
            if reason is None:
                offered[name] = backend.offered()
            else:
                why_not[name] = reason
        return offered, why_not

    def runnable(self, key: EngineKey) -> bool:
        """Whether key can be loaded now: its engine runs this model and the precision's files exist."""
        backend = self.by_name.get(key.engine)
        return backend is not None and backend.unavailable() is None and backend.ready(key.precision)

    def run(self, key: EngineKey) -> EngineRun:
        """The run of a runnable key, with the file it loads as it is now."""
        model, stamp = self.by_name[key.engine].model_file(key.precision)
        return EngineRun(key.engine, key.precision, key.threads, model, stamp)

    def load(self, run: EngineRun) -> Engine:
        return self.by_name[run.engine].load(run)

    def prepare(self, tensors: list[np.ndarray], threads: int, progress: Progress,
                cancel: threading.Event | None) -> None:
        """Let every engine this model runs on make what it builds from the calibration frames."""
        for backend in self.by_name.values():
            if backend.unavailable() is None:
                backend.prepare(tensors, threads, progress, cancel)
