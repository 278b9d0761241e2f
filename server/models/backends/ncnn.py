"""NCNN as a backend: fp32 and fp16 from the project's translation of the ONNX, int8 once made from calibration frames.

The translation is written at upload (server.models.acceptance) or here when first asked for; a model whose graph
does not translate has no NCNN (unavailable says why). The int8 model is made on the device from the engine
timing's calibration frames (prepare: server.models.ncnn.int8).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from server.models.backends.base import Cancelled, EngineRun, Progress
from server.models.ncnn import NcnnBuild, ncnn_model_for
from server.models.ncnn.int8 import Int8Cancelled, build_ncnn_int8, int8_files, int8_ready
from server.vision.engines import NCNN, Engine
from server.vision.engines.ncnn_engine import NcnnEngine, NcnnFiles

logger = logging.getLogger(__name__)


class NcnnBackend:
    """NCNN for one model: its translation (built once, when first needed) and its int8 model once made."""

    name = NCNN
    precisions = ("fp32", "fp16", "int8")

    def __init__(self, fp32_path: Path, build: NcnnBuild | None = None):
        self.fp32_path = fp32_path
        self._build = build
        self._lock = threading.Lock()
        self._int8_seen: tuple[int | None, NcnnFiles | None] = (None, None)  # (its .json's mtime, int8_ready then)

    def build(self) -> NcnnBuild:
        """The NCNN model of the fp32 ONNX (or why there is none), written the first time it is asked for."""
        build = self._build
        if build is not None:  # asked several times a frame: no lock once written (a reference read is atomic)
            return build
        with self._lock:
            if self._build is None:
                self._build = ncnn_model_for(self.fp32_path)
            return self._build

    def int8(self) -> NcnnFiles | None:
        """The int8 model's files when whole and of this ONNX, read again only when its .json changes.

        The policy asks on every frame; int8_ready reads and parses two .json files, a stat does not.
        """
        stamp = self._int8_stamp()
        if stamp != self._int8_seen[0]:
            self._int8_seen = (stamp, int8_ready(self.build()) if stamp is not None else None)
        return self._int8_seen[1]

    def _int8_stamp(self) -> int | None:
        files = int8_files(self.build())
        try:
            return files.head.stat().st_mtime_ns if files is not None else None
        except FileNotFoundError:
            return None

    def unavailable(self) -> str | None:
        build = self.build()
        return None if build.files is not None else (build.reason or "not built")

    def offered(self) -> list[str]:
        return [precision for precision in self.precisions if self.ready(precision)]

    def ready(self, precision: str) -> bool:
        if self.build().files is None:
            return False
        return precision != "int8" or self.int8() is not None

    def model_file(self, precision: str) -> tuple[Path, int | None]:
        """The .param loaded, stamped by the .json written last (int8: made again is a new model)."""
        if precision == "int8":
            files = self.int8()
            stamp = self._int8_seen[0]
        else:
            files, stamp = self.build().files, None  # written once per ONNX, before anything runs it
        if files is None:
            raise RuntimeError(f"the NCNN {precision} model has not been made")
        return files.param, stamp

    def load(self, run: EngineRun) -> Engine:
        files = self.int8() if run.precision == "int8" else self.build().files
        if files is None:
            raise RuntimeError("the NCNN int8 model has not been made")
        return NcnnEngine(files, run.threads, run.precision)

    def prepare(self, tensors: list[np.ndarray], threads: int, progress: Progress,
                cancel: threading.Event | None) -> None:
        """Make the int8 model from the calibration frames; one that fails is a row less, not a failed timing."""
        try:
            build_ncnn_int8(self.build(), tensors, threads=threads, on_progress=progress, cancel=cancel)
        except Int8Cancelled:
            raise Cancelled("cancelled while making the NCNN int8 model") from None
        except Exception as error:  # NCNN int8 is one row less, not a failed timing
            logger.warning("the NCNN int8 model could not be made: %s", error)
