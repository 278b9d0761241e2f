"""An ONNX Runtime session for a YOLOv8 detect model, with the input size it accepts."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from server.vision import processing
from server.vision.processing import Detections

logger = logging.getLogger(__name__)


def default_threads() -> int:
    """Return the intra-op thread count that suits this machine: every core, at most four."""
    return max(1, min(os.cpu_count() or 1, 4))


def model_stride(session: ort.InferenceSession) -> int:
    """Return the largest stride of the model (its metadata's "stride": 32, or 64 for P6 heads), 32 if unstated."""
    value = session.get_modelmeta().custom_metadata_map.get("stride", "")
    return int(value) if value.isdigit() and int(value) in (32, 64, 128) else processing.STRIDE


class Detector:
    """Run a YOLOv8 detect ONNX model on the CPU."""

    def __init__(self, onnx_path: str | Path, threads: int | None = None, profile_prefix: str | None = None):
        self.path = Path(onnx_path)
        self.threads = threads or default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if profile_prefix:  # a trace asked for ONNX Runtime's operator profile
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        self.session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        height, width = model_input.shape[2:4]
        fixed = isinstance(height, int) and isinstance(width, int)
        self.fixed_hw: tuple[int, int] | None = (height, width) if fixed else None
        self.stride = model_stride(self.session)
        logger.info(
            "loaded %s (%s, %d threads, input %s)",
            self.path.name,
            self.session.get_providers()[0],
            self.threads,
            self.fixed_hw or "dynamic",
        )

    @property
    def precision(self) -> str:
        """Return "int8" for a quantized model file (named *.int8.onnx), else "fp32"."""
        return "int8" if ".int8" in self.path.name else "fp32"

    def input_hw(self, frame_hw: tuple[int, int], imgsz: int) -> tuple[int, int]:
        """Return the network input (h, w) for a frame: the fixed size, or aspect-true at imgsz."""
        if self.fixed_hw:
            return self.fixed_hw
        size = -(-imgsz // self.stride) * self.stride  # a P6 model (stride 64) runs 416 as 448
        return processing.input_shape_for(frame_hw, size, self.stride)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a 1x3xHxW tensor and return its raw 1 x (4+nc) x anchors output."""
        return self.session.run(None, {self.input_name: tensor})[0]

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
        output = self.infer(tensor)
        lap("inference")
        detections = processing.postprocess(output, box, frame_hw, conf, iou, classes)
        lap("postprocess")
        return detections
