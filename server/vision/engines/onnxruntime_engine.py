"""The ONNX Runtime engine: a CPU session of an .onnx (fp32, or an int8 recipe's model named *.int8*.onnx)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.vision import processing
from server.vision.engines import ONNXRUNTIME

logger = logging.getLogger(__name__)


def model_stride(session: ort.InferenceSession) -> int:
    """Return the largest stride of the model (its metadata's "stride": 32, or 64 for P6 heads), 32 if unstated."""
    value = session.get_modelmeta().custom_metadata_map.get("stride", "")
    return int(value) if value.isdigit() and int(value) in (32, 64, 128) else processing.STRIDE


class OnnxRuntimeEngine:
    """Run an ONNX model on ONNX Runtime's CPU provider, every graph optimisation on."""

    name = ONNXRUNTIME

    def __init__(self, onnx_path: str | Path, threads: int, profile_prefix: str | None = None):
        self.path = Path(onnx_path)
        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if profile_prefix:  # a trace asked for ONNX Runtime's operator profile
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        height, width = model_input.shape[2:4]
        fixed = isinstance(height, int) and isinstance(width, int)
        self.fixed_hw: tuple[int, int] | None = (height, width) if fixed else None
        self.stride = model_stride(self.session)
        logger.info("loaded %s (%s, %d threads, input %s)", self.path.name, self.session.get_providers()[0],
                    threads, self.fixed_hw or "dynamic")

    @property
    def precision(self) -> str:
        """Return "int8" for a quantized model file (named *.int8.onnx), else "fp32"."""
        return "int8" if ".int8" in self.path.name else "fp32"

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a 1x3xHxW tensor and return its raw 1 x (4+nc) x anchors output."""
        return self.session.run(None, {self.input_name: tensor})[0]
