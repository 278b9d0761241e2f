"""Calibration frames split for tuning, and activation ranges collected once per method for every recipe."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    create_calibrator,
    quantize_static,
)

from server.vision.sources.base import CALIBRATION_FRAMES

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
# Of the CALIBRATION_FRAMES a source gives, every other one is held back; a quarter calibrate.
MAX_CALIBRATION_FRAMES = CALIBRATION_FRAMES // 4
MAX_HELD_BACK_FRAMES = CALIBRATION_FRAMES // 2  # a pool: fp32 runs on them until it has enough boxes (judging)
CALIBRATION_CHUNK = 2  # frames per collect call: histogram calibrators hold every activation of a chunk
# Recent onnxruntime (1.32 has it) reuses calibration ranges across recipes; older ones calibrate per recipe.
CACHE_SUPPORTED = "calibration_cache_path" in inspect.signature(quantize_static).parameters


def split_frames(frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split frames alternately into calibration and held-back sets, so both span the whole video."""
    if len(frames) < 2:
        raise ValueError("the engine timing needs at least two frames")
    return spread(list(frames[0::2]), MAX_CALIBRATION_FRAMES), spread(list(frames[1::2]), MAX_HELD_BACK_FRAMES)


def spread(items: list, count: int) -> list:
    """Return at most count items picked evenly across the list."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


class FrameReader(CalibrationDataReader):
    """Feed preprocessed frames to ONNX Runtime's calibrator, reporting each one by its overall index."""

    def __init__(self, input_name: str, tensors: list[np.ndarray], on_frame: Callable[[int], None], first: int = 0):
        self.input_name = input_name
        self.tensors = tensors
        self.on_frame = on_frame
        self.first = first
        self._next = 0

    def get_next(self) -> dict | None:
        if self._next >= len(self.tensors):
            return None
        self.on_frame(self.first + self._next)
        self._next += 1
        return {self.input_name: self.tensors[self._next - 1]}

    def __len__(self) -> int:
        return len(self.tensors)


@dataclass
class Calibration:
    """Calibration frames for one method, and the cache of their ranges once collected."""

    method: str
    input_name: str
    tensors: list[np.ndarray]
    cache: Path | None = None

    def reader(self) -> FrameReader:
        return FrameReader(self.input_name, self.tensors, lambda index: None)


def calibrate(calibration: Calibration, prepared: Path, cache: Path,
              on_frame: Callable[[int], None] = lambda index: None) -> Calibration:
    """Collect activation ranges into a cache file that every recipe of this method reuses."""
    from onnxruntime.quantization import save_tensors_data

    calibrator = create_calibrator(
        prepared,
        augmented_model_path=str(cache.with_suffix(".augmented.onnx")),
        calibrate_method=CALIBRATION_METHODS[calibration.method],
        # Symmetric ranges (percentile's default) waste half of u8 on post-SiLU activations.
        # CalibMaxIntermediateOutputs is left out: onnxruntime 1.31 discarded the ranges with it.
        extra_options={"symmetric": False},
    )
    tensors = calibration.tensors  # the histogram calibrators' print()s go to a quiet logger (int8.quiet)
    # Collecting chunk by chunk bounds memory; ranges and histograms merge across calls.
    for first in range(0, len(tensors), CALIBRATION_CHUNK):
        chunk = tensors[first : first + CALIBRATION_CHUNK]
        calibrator.collect_data(FrameReader(calibration.input_name, chunk, on_frame, first))
    save_tensors_data(calibrator.compute_data(), cache)
    calibration.cache = cache
    return calibration
