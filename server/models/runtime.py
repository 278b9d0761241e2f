"""ONNX Runtime sessions of the current model: fp32, or its tuned int8 variant once that is ready."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from pathlib import Path

from server.vision.detector import Detector
from server.vision.settings import Settings


class ModelRuntime:
    """Hand out a warmed-up Detector for the settings in force; the server and the benchmark both use it.

    A session is keyed by (model file, threads) and built when first asked for. The server keeps one (a new key
    replaces it, freeing its memory); the benchmark keeps several, since its rows take turns frame by frame.
    """

    def __init__(self, fp32_path: Path, int8_path: Callable[[], Path | None], keep: int = 1):
        self.fp32_path = Path(fp32_path)
        self.int8_path = int8_path
        self.keep = keep
        self._lock = threading.Lock()
        self._detectors: collections.OrderedDict[tuple, Detector] = collections.OrderedDict()

    def model_path(self, settings: Settings) -> Path:
        """Return the int8 model when asked for and ready; fp32 otherwise (also while int8 is being tuned)."""
        if settings.precision == "int8":
            return self.int8_path() or self.fp32_path
        return self.fp32_path

    def detector_for(self, settings: Settings) -> Detector:
        """Return a session for these settings, loading (and warming up) a new one when they changed."""
        key = (self.model_path(settings), settings.threads)
        with self._lock:
            if key not in self._detectors:
                detector = Detector(key[0], threads=settings.threads)
                detector.warm_up(detector.fixed_hw or (settings.imgsz, settings.imgsz))
                self._detectors[key] = detector
                while len(self._detectors) > self.keep:
                    self._detectors.popitem(last=False)
            self._detectors.move_to_end(key)
            return self._detectors[key]
