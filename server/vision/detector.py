"""The one detect path (stream, benchmark, evaluation): pre-process, an engine's inference, post-process."""

from __future__ import annotations

import logging
import os
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

import numpy as np

from server.vision import processing
from server.vision.engines import Engine
from server.vision.engines.onnxruntime_engine import OnnxRuntimeEngine
from server.vision.processing import Detections
from server.vision.turns import nothing

logger = logging.getLogger(__name__)


def default_threads() -> int:
    """Return the intra-op thread count that suits this machine: every core, at most four."""
    return max(1, min(os.cpu_count() or 1, 4))


class Detector:
    """Run a YOLOv8 detect model on an engine: an ONNX path gets ONNX Runtime, or pass any Engine."""

    def __init__(self, model: str | Path | Engine, threads: int | None = None, profile_prefix: str | None = None,
                 turn: Callable[[], AbstractContextManager] = nothing):
        if isinstance(model, (str, Path)):
            model = OnnxRuntimeEngine(model, threads or default_threads(), profile_prefix)
        self.engine: Engine = model
        self.turn = turn  # held around detect's inference: the stream's turn at the CPU (server.vision.turns)

    # What callers read off a detector is the engine's.
    @property
    def path(self) -> Path:
        return self.engine.path

    @property
    def threads(self) -> int:
        return self.engine.threads

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        return self.engine.fixed_hw

    @property
    def stride(self) -> int:
        return self.engine.stride

    @property
    def precision(self) -> str:
        return self.engine.precision

    @property
    def session(self):
        """The ONNX Runtime session (metadata, operator profiles); only an ONNX Runtime engine has one."""
        return self.engine.session

    def input_hw(self, frame_hw: tuple[int, int], imgsz: int) -> tuple[int, int]:
        """Return the network input (h, w) for a frame: the fixed size, or aspect-true at imgsz."""
        if self.fixed_hw:
            return self.fixed_hw
        size = -(-imgsz // self.stride) * self.stride  # a P6 model (stride 64) runs 416 as 448
        return processing.input_shape_for(frame_hw, size, self.stride)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a 1x3xHxW tensor and return its raw 1 x (4+nc) x anchors output."""
        return self.engine.infer(tensor)

    def warm_up(self, input_hw: tuple[int, int]) -> float:
        """Run one inference on a blank input so the first real frame is not slow; return its ms."""
        started = time.perf_counter()
        self.infer(np.zeros((1, 3, *input_hw), np.float32))
        return (time.perf_counter() - started) * 1000

    def detect(
        self,
        frame: np.ndarray,
        imgsz: int,
        conf: float,
        iou: float,
        classes: list[int] | None = None,
        lap: Callable[[str], None] = lambda stage: None,
    ) -> Detections:
        """Preprocess, infer and postprocess one BGR frame: the one detect path of the stream, benchmark and evaluation.

        lap(stage) is called as each of "preprocess", "inference" and "postprocess" ends, for per-stage timings.
        """
        frame_hw = frame.shape[:2]
        tensor, box = processing.preprocess(frame, self.input_hw(frame_hw, imgsz))
        lap("preprocess")
        infer_above = getattr(self.engine, "infer_above", None)  # only the candidates, where an engine can
        with self.turn():
            output = infer_above(tensor, conf) if infer_above is not None else self.infer(tensor)
        lap("inference")
        detections = processing.postprocess(output, box, frame_hw, conf, iou, classes)
        lap("postprocess")
        return detections
