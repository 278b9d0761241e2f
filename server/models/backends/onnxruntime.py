"""ONNX Runtime as a backend: fp32 always; int8 once the engine timing has made and kept an int8 recipe's model.

Its int8 is not prepared here: the recipes are built, calibrated and judged by the engine timing itself
(server.models.tuning.tune), which keeps the chosen one beside the fp32 model; int8_path says which, once it has.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from server.models.backends.base import EngineRun, Progress, stamp_of
from server.vision.engines import ONNXRUNTIME, Engine
from server.vision.engines.onnxruntime_engine import OnnxRuntimeEngine


class OnnxRuntimeBackend:
    """ONNX Runtime for one model: the fp32 ONNX, and the int8 model the timing kept (int8_path)."""

    name = ONNXRUNTIME
    precisions = ("fp32", "int8")

    def __init__(self, fp32_path: Path, int8_path: Callable[[], Path | None]):
        self.fp32_path = fp32_path
        self.int8_path = int8_path  # the kept int8 model of this device's timing, None until there is one

    def unavailable(self) -> str | None:
        return None  # every accepted model runs on ONNX Runtime (acceptance trial-ran it)

    def offered(self) -> list[str]:
        return list(self.precisions)  # int8 is offered before it exists: choosing it starts the timing

    def ready(self, precision: str) -> bool:
        return precision == "fp32" or (precision == "int8" and self.int8_path() is not None)

    def model_file(self, precision: str) -> tuple[Path, int | None]:
        if precision != "int8":  # the fp32 file never changes under a runtime: a new upload makes a new runtime
            return self.fp32_path, None
        path = self.int8_path() or self.fp32_path
        return path, stamp_of(path)  # the int8 model is made again in place when re-timed

    def load(self, run: EngineRun) -> Engine:
        return OnnxRuntimeEngine(run.model, run.threads)

    def prepare(self, tensors: list[np.ndarray], threads: int, progress: Progress,
                cancel: threading.Event | None) -> None:
        """Nothing: ONNX Runtime int8's recipes are the timing's own steps."""
