"""The warmed-up detectors of the current model, cached by what runs (server.models.policy.EngineRun)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from pathlib import Path

from server.models.backends import Backends
from server.models.backends.base import EngineRun
from server.models.ncnn import NcnnBuild
from server.models.policy import EnginePolicy, Verdict
from server.vision.detector import Detector
from server.vision.memory import release_freed_memory
from server.vision.settings import Settings
from server.vision.turns import InferenceTurns, nothing


class ModelRuntime:
    """Hand out a warmed-up Detector for the settings in force; the server and the benchmark both use it.

    What runs is the policy's to say (EnginePolicy.run_for); a detector is kept per EngineRun, built when first
    asked for. The server keeps one (a new run replaces it, freeing its memory); the benchmark keeps several,
    since its rows take turns frame by frame.
    """

    def __init__(self, fp32_path: Path, int8_path: Callable[[], Path | None], keep: int = 1,
                 ncnn: NcnnBuild | None = None, verdict: Verdict = lambda: None,
                 turns: InferenceTurns | None = None):
        self.fp32_path = Path(fp32_path)
        self.backends = Backends(self.fp32_path, int8_path, ncnn)
        self.policy = EnginePolicy(self.backends, verdict)  # verdict: the device's timing (EngineTiming.verdict)
        self.keep = keep
        self.turns = turns  # shared with the engine timing: the stream's detectors infer in turns with it
        self._lock = threading.Lock()
        self._detectors: collections.OrderedDict[EngineRun, Detector] = collections.OrderedDict()

    def detector_for(self, settings: Settings) -> Detector:
        """Return a detector for these settings, loading (and warming up) a new one when what runs changed."""
        run = self.policy.run_for(settings)
        with self._lock:  # one look-up on the every-frame path: hashing an EngineRun is most of this call's cost
            detector = self._detectors.get(run)
            if detector is None:
                detector = Detector(self.backends.load(run), turn=self.turns.stream if self.turns else nothing)
                detector.warm_up(detector.fixed_hw or (settings.imgsz, settings.imgsz))
                self._detectors[run] = detector
                while len(self._detectors) > self.keep:
                    self._detectors.popitem(last=False)
                    release_freed_memory("a detector was replaced")
            elif len(self._detectors) > 1:
                self._detectors.move_to_end(run)
            return detector
