"""The engines of the current model: ONNX Runtime fp32 or its tuned int8 variant; NCNN fp32, fp16 or int8 (made)."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from server.models.ncnn import NcnnBuild, ncnn_model_for
from server.models.ncnn.int8 import int8_files, int8_ready
from server.vision.engines.ncnn_engine import NcnnFiles
from server.vision.detector import Detector
from server.vision.engines import AUTO, ENGINE_PRECISIONS, NCNN, ONNXRUNTIME, Engine, EngineKey
from server.vision.engines.ncnn_engine import NcnnEngine
from server.vision.engines.onnxruntime_engine import OnnxRuntimeEngine
from server.vision.memory import release_freed_memory
from server.vision.settings import Settings
from server.vision.turns import InferenceTurns, nothing

logger = logging.getLogger(__name__)


class ModelRuntime:
    """Hand out a warmed-up Detector for the settings in force; the server and the benchmark both use it.

    A detector is keyed by EngineKey(engine, precision, threads) and built when first asked for. The server keeps
    one (a new key replaces it, freeing its memory); the benchmark keeps several, since its rows take turns frame
    by frame. The NCNN model is the one given (built at upload) or made from the fp32 ONNX when first needed.
    """

    def __init__(self, fp32_path: Path, int8_path: Callable[[], Path | None], keep: int = 1,
                 ncnn: NcnnBuild | None = None, verdict: Callable[[], dict | None] = lambda: None,
                 turns: InferenceTurns | None = None):
        self.fp32_path = Path(fp32_path)
        self.int8_path = int8_path
        self.verdict = verdict  # what engine auto runs once this device has timed them (TuningJob.verdict)
        self.keep = keep
        self.turns = turns  # shared with the on-device timing: the stream's detectors infer in turns with it
        self._ncnn = ncnn
        self._lock = threading.Lock()
        self._ncnn_lock = threading.Lock()
        self._int8_seen: tuple[int | None, NcnnFiles | None] = (None, None)  # (its .json's mtime, int8_ready then)
        self._detectors: collections.OrderedDict[tuple, Detector] = collections.OrderedDict()

    def ncnn(self) -> NcnnBuild:
        """Return the NCNN model of the fp32 ONNX (or why there is none), writing it the first time it is asked for."""
        with self._ncnn_lock:
            if self._ncnn is None:
                self._ncnn = ncnn_model_for(self.fp32_path)
            return self._ncnn

    def ncnn_int8(self) -> NcnnFiles | None:
        """int8_ready for this model, read again only when the int8 model's .json changes.

        The producer asks on every frame (key_for); int8_ready reads and parses two .json files, a stat does not.
        """
        files = int8_files(self.ncnn())
        try:
            stamp = files.head.stat().st_mtime_ns if files is not None else None
        except FileNotFoundError:
            stamp = None
        if stamp != self._int8_seen[0]:
            self._int8_seen = (stamp, int8_ready(self.ncnn()) if stamp is not None else None)
        return self._int8_seen[1]

    def offered(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Return the precisions each engine offers for this model, and why an engine is left out."""
        offered = {ONNXRUNTIME: list(ENGINE_PRECISIONS[ONNXRUNTIME])}
        build = self.ncnn()
        if build.files is not None:  # NCNN int8 once its calibrated files exist (server.models.ncnn.int8)
            offered[NCNN] = [p for p in ENGINE_PRECISIONS[NCNN] if p != "int8" or self.ncnn_int8() is not None]
        return offered, ({} if build.files is not None else {NCNN: build.reason or "not built"})

    def onnx_path(self, key: EngineKey) -> Path:
        """Return the ONNX an ONNX Runtime key runs: the int8 model when asked for and ready, else fp32."""
        if key.precision == "int8":
            return self.int8_path() or self.fp32_path
        return self.fp32_path

    def key_for(self, settings: Settings) -> EngineKey:
        """Return what runs for these settings: auto's verdict, NCNN when asked for and built, else ONNX Runtime."""
        if settings.engine == AUTO:
            return self._auto_key(settings)
        if settings.engine == NCNN and self.ncnn().files is not None:
            # NCNN int8 not made (or made stale) runs NCNN fp32 meanwhile, as ONNX Runtime int8 runs fp32 until tuned
            precision = "fp32" if settings.precision == "int8" and self.ncnn_int8() is None \
                else settings.precision
            return EngineKey(NCNN, precision, settings.threads)
        precision = "int8" if settings.precision == "int8" and self.int8_path() else "fp32"
        return EngineKey(ONNXRUNTIME, precision, settings.threads)

    def _auto_key(self, settings: Settings) -> EngineKey:
        """The row this device's timing chose, while it can run; ONNX Runtime fp32 until then (and after reset)."""
        verdict = self.verdict()
        if verdict:
            key = EngineKey(verdict["engine"], verdict["precision"], verdict["threads"])
            if self.runnable(key):
                return key
        return EngineKey(ONNXRUNTIME, "fp32", settings.threads)

    def runnable(self, key: EngineKey) -> bool:
        """Whether the files key needs exist now (an int8 model once tuned or made, NCNN once written)."""
        if key.engine == NCNN:
            build = self.ncnn()
            return build.files is not None and (key.precision != "int8" or self.ncnn_int8() is not None)
        return key.precision != "int8" or self.int8_path() is not None

    def engine_for(self, key: EngineKey) -> Engine:
        """Load the engine of a key (not warmed up)."""
        if key.engine == NCNN:
            build = self.ncnn()
            files = self.ncnn_int8() if key.precision == "int8" else build.files
            if files is None:
                raise RuntimeError("the NCNN int8 model has not been made")
            return NcnnEngine(files, key.threads, key.precision)
        return OnnxRuntimeEngine(self.onnx_path(key), key.threads)

    def detector_for(self, settings: Settings) -> Detector:
        """Return a detector for these settings, loading (and warming up) a new one when they changed."""
        key = self.key_for(settings)
        if key.engine == ONNXRUNTIME:  # the int8 file is swapped in place once tuned: the path is part of the key
            key = (*key, self.onnx_path(key))
        elif key.precision == "int8":  # NCNN int8 made again (new frames) is a new model: its .json's time is the key
            self.ncnn_int8()  # brings _int8_seen up to date
            key = (*key, self._int8_seen[0])
        with self._lock:
            if key not in self._detectors:
                detector = Detector(self.engine_for(EngineKey(*key[:3])),
                                    turn=self.turns.stream if self.turns else nothing)
                detector.warm_up(detector.fixed_hw or (settings.imgsz, settings.imgsz))
                self._detectors[key] = detector
                while len(self._detectors) > self.keep:
                    self._detectors.popitem(last=False)  # the replaced detector's last reference
                    release_freed_memory("a detector was replaced")
            self._detectors.move_to_end(key)
            return self._detectors[key]
