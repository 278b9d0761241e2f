"""Inference engines behind the one detect path: each takes the preprocessed tensor and returns the head's output.

An engine is anything with the attributes and the method of Engine; server.vision.detector.Detector wraps one
(pre-process, infer, post-process) and is what the stream, the benchmark and the evaluation call. Two engines exist:
ONNX Runtime (server.vision.engines.onnxruntime_engine: fp32 and the int8 recipes' models) and NCNN
(server.vision.engines.ncnn_engine: fp32 and fp16 from the .param/.bin that server.models.ncnn writes, int8 from
the calibrated files of server.models.ncnn.int8).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

ONNXRUNTIME, NCNN = "onnxruntime", "ncnn"
ENGINES = (ONNXRUNTIME, NCNN)
# The engine setting's default: the engine x precision x threads this device measured fastest for the model within
# min_agreement (server.models.choice), ONNX Runtime fp32 until it has measured (server.models.policy).
AUTO = "auto"
# What each engine can run, and which of these a given model offers, is the engine's backend's to say
# (server.models.backends); what runs for given settings is server.models.policy's.


class EngineKey(NamedTuple):
    """What selects a warmed-up engine for the current model: a plain (engine, precision, threads) triple."""

    engine: str
    precision: str
    threads: int


@runtime_checkable
class Engine(Protocol):
    """A loaded network: infer(1x3xHxW float32) -> the head's raw 1 x (4 + nc) x anchors output."""

    name: str  # "onnxruntime" or "ncnn"
    precision: str  # "fp32", "int8" (ONNX Runtime or NCNN) or "fp16" (NCNN)
    threads: int
    fixed_hw: tuple[int, int] | None  # the only input (h, w) the model takes, None when any stride multiple goes
    stride: int  # the largest stride: a dynamic input's sides are multiples of it
    path: Path  # the model file it runs (the .onnx, or the NCNN .param)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a 1x3xHxW float32 tensor; return 1 x (4 + nc) x anchors, as the ONNX model's output0."""
        ...


# An engine may also have infer_above(tensor, conf) -> 1 x (4 + nc) x candidates: infer's output restricted to the
# anchors whose best class scores above conf (in anchor order), when it can make that cheaper than the whole output
# (NCNN: the DFL runs on the candidates only). Detector.detect uses it when present; everything that compares raw
# outputs (the int8 verdict, the equality tests) uses infer.
