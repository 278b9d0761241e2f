"""NCNN int8: the writer's fp32 model with its convolutions quantized in ncnn's int8 format, calibrated on frames.

ncnn's own int8 tools (ncnn2table, ncnn2int8) are not in the pip wheel, so this is the project's: it follows the
format of ncnn's developer guide (quantized-int8-inference, operation-param-weight-table) as ncnn's loader reads it.

- A quantized Convolution has param 8 (int8_scale_term) = 2; its weight buffer is int8, tagged 0x000D4B38 and
  padded to 32 bits, followed by the bias (float32), weight_data_int8_scales (num_output float32: one scale per
  output channel, 127 / max|w|) and bottom_blob_int8_scales (one float32: 127 / threshold of its input).
  A ConvolutionDepthWise has int8_scale_term = 1 and one weight scale per group.
- 3x3 stride-1 convolutions get 6-bit weights (31 / max|w|), as ncnn2table makes them: ncnn's int8 Winograd
  F(4,3) kernels transform the weights in 16 bits.
- Weights round half away from zero and clip to [-127, 127] (ncnn's float2int8).
- The activation thresholds come from running the fp32 NCNN model on calibration frames and reading every
  quantized convolution's input blob: by KL divergence over a 2048-bin histogram of |x| (ncnn2table's default
  method, written here from its description) or by max |x| ("minmax").
- The head's last convolutions (the per-level box and class maps) stay float by default: their outputs are the
  maps the decode reads, and an int8 error there moves boxes and scores directly.
- On an ARM CPU with dot product (the Pi 5's Cortex-A76) the 3x3 stride-1 convolutions stay float too: ncnn runs
  int8 there without Winograd, so those convs would do every multiply-add that fp16's Winograd kernels avoid
  (counted on the emulated A76: all-int8 1.24x fp16's instructions at 640, this mix 0.84x; docs/engines.md).
  Elsewhere every convolution but the head's is int8: on x86 with VNNI that timed fastest (without VNNI: not
  measured).

ncnn quantizes each convolution's input and dequantizes its output itself at run time (opt.use_int8_inference); the
SiLU between convolutions stays a float layer (fp16 where the CPU computes in fp16: NcnnEngine), so no requantize
is fused (ncnn2int8 fuses only a convolution read directly by another). The three files sit beside the fp32
model's, <stem>.ncnn-int8.param/.bin/.json; the .json is the fp32 model's head description (same ONNX, same blobs),
removed first and written last, so its presence means the set is whole and of the current ONNX
(server.models.ncnn.cached).
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from server.files import atomic_write, write_text
from server.models.ncnn import NcnnBuild, cached
from server.models.ncnn.param import Layer, param_text
from server.models.ncnn.translate import Translation
from server.models.ncnn.weights import write_weights
from server.vision.engines.ncnn_engine import NcnnFiles, NcnnHead

logger = logging.getLogger(__name__)

CONVOLUTIONS = ("Convolution", "ConvolutionDepthWise")
METHODS = ("minmax", "kl")  # max-abs agrees better on the demo video (docs/engines.md)
HISTOGRAM_BINS = 2048
QUANTIZED_BINS = 128  # the levels of |x| an int8 activation has
KL_EPSILON = 1e-4
# Convolutions that may stay float: the head's map convs, the one reading the image, the 3x3 stride-1 ones (which
# fp16 runs as Winograd, while ncnn's int8 on a CPU with dot product does not).
KEEP_HEAD, KEEP_FIRST, KEEP_WINOGRAD = "head", "first", "3x3s1"
Progress = Callable[[str, float, str], None]  # (stage, 0..1, message), as the engine timing reports


AT_HWCAP, HWCAP_ASIMDDP = 16, 1 << 20  # aarch64 Linux: the auxiliary vector's dot-product bit (qemu sets it too)


def arm_dot_product() -> bool:
    """Whether this is an aarch64 CPU with the dot-product instructions (ncnn's int8 then skips Winograd)."""
    if platform.machine().lower() not in ("aarch64", "arm64"):
        return False
    try:
        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype, getauxval.argtypes = ctypes.c_ulong, (ctypes.c_ulong,)
        return bool(getauxval(AT_HWCAP) & HWCAP_ASIMDDP)
    except (OSError, AttributeError):
        return False


def device_keep() -> frozenset[str]:
    """The convolutions to leave float on this CPU: the head's maps, and on ARM with dot product the 3x3 s1 ones."""
    return frozenset({KEEP_HEAD, KEEP_WINOGRAD}) if arm_dot_product() else frozenset({KEEP_HEAD})


class Int8Cancelled(Exception):
    """Raised when the cancel event is set while the int8 model is being made."""


@dataclass(frozen=True)
class Int8Report:
    """What making the int8 model did: which convolutions it quantized, on how many frames, by which method."""

    files: NcnnFiles
    method: str
    frames: int
    quantized: list[str] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    seconds: float = 0.0


def int8_files(build: NcnnBuild) -> NcnnFiles | None:
    """Return the int8 files' names beside an NCNN build's (None when there is no NCNN model)."""
    return None if build.files is None else build.files.int8()


def source_onnx(files: NcnnFiles) -> Path:
    """The ONNX an NCNN model was written from (named in its .json, in the same folder)."""
    return files.param.with_name(NcnnHead.from_json(files.head.read_text()).source["onnx"])


def int8_ready(build: NcnnBuild) -> NcnnFiles | None:
    """Return the int8 files when a whole set of the current ONNX's model exists, else None (never raises)."""
    files = int8_files(build)
    if files is None or not files.head.is_file():
        return None
    try:
        return files if cached(source_onnx(build.files), files) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_int8(build: NcnnBuild) -> None:
    """Delete an NCNN build's int8 files (the .json first, so a half-deleted set is never read)."""
    files = int8_files(build)
    if files is not None:
        for path in (files.head, files.param, files.bin):
            path.unlink(missing_ok=True)


# --- weights -------------------------------------------------------------------------------------------------------

def round_away(values: np.ndarray) -> np.ndarray:
    """Round half away from zero, as ncnn's float2int8 does (numpy's round is half to even)."""
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def to_int8(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Quantize rows of values (one row per scale) to int8: round(x * scale) clipped to [-127, 127]."""
    scaled = values.astype(np.float64) * scales.astype(np.float64)[:, None]
    return np.clip(round_away(scaled), -127, 127).astype(np.int8)


def weight_levels(layer: Layer) -> int:
    """127, or 31 (6 bits) for the 3x3 stride-1 convolutions ncnn may run as int8 Winograd F(4,3)."""
    p = layer.params
    winograd = (layer.kind == "Convolution" and p[1] == 3 and p[11] == 3 and p[3] == 1 and p[13] == 1
                and p[2] == 1 and p[12] == 1)
    return 31 if winograd else 127


def weight_scales(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """Return the layer's weights as rows (per output channel, or per group) and one scale per row."""
    weight = layer.weights[0][0]
    rows = layer.params.get(7, 1) if layer.kind == "ConvolutionDepthWise" else layer.params[0]
    matrix = weight.reshape(rows, -1).astype(np.float32)
    peak = np.abs(matrix).max(axis=1)
    scales = np.where(peak > 0, weight_levels(layer) / np.where(peak > 0, peak, 1), 1.0).astype(np.float32)
    return matrix, scales


def quantized_layer(layer: Layer, bottom_scale: float) -> Layer:
    """Return the int8 version of a convolution layer: int8 weights, its scales, int8_scale_term set."""
    matrix, scales = weight_scales(layer)
    weights = [(to_int8(matrix, scales).reshape(-1), True)]
    if layer.params.get(5):
        weights.append((layer.weights[1][0], False))
    weights += [(scales, False), (np.array([bottom_scale], np.float32), False)]
    params = {**layer.params, 8: 1 if layer.kind == "ConvolutionDepthWise" else 2}
    return Layer(layer.kind, layer.name, layer.inputs, layer.outputs, params, weights)


# --- activation thresholds ------------------------------------------------------------------------------------------

def kl_threshold_bin(histogram: np.ndarray) -> int:
    """Return the number of histogram bins of |x| to keep so that 128 levels lose the least (KL divergence).

    For each candidate t, P is the first t bins with everything beyond folded into the last (what clipping at t
    keeps); Q is the first t bins as they are, merged into 128 levels and spread back evenly over the bins that
    were non-empty in each level (what 128 levels can say of them). The t with the smallest KL(P || Q) wins: the
    clipped tail and the coarse levels are weighed against each other.
    """
    total = histogram.sum()
    if total == 0:
        return len(histogram)
    normed = histogram.astype(np.float64) / total
    tail = np.concatenate([np.cumsum(normed[::-1])[::-1], [0.0]])  # tail[t] = sum of normed[t:]
    best, best_kl = len(normed), np.inf
    for t in range(QUANTIZED_BINS, len(normed) + 1):
        kept = normed[:t]
        p = kept.copy()
        p[-1] += tail[t]
        level = (np.arange(t) * QUANTIZED_BINS) // t  # which of the 128 levels each bin falls into
        nonzero = kept > 0
        mass = np.bincount(level, weights=kept, minlength=QUANTIZED_BINS)
        count = np.bincount(level, weights=nonzero, minlength=QUANTIZED_BINS)
        q = np.where(nonzero, mass[level] / np.maximum(count[level], 1), 0.0)
        p_s, q_s = p + KL_EPSILON * (p == 0), q + KL_EPSILON * (q == 0)
        kl = float(np.sum(p_s * np.log(p_s / q_s)))
        if kl < best_kl:
            best, best_kl = t, kl
    return best


@dataclass
class BlobStats:
    """|x| of one blob over the calibration frames: its max, then its histogram over [0, max]."""

    peak: float = 0.0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, np.int64))

    def threshold(self, method: str) -> float:
        if method == "minmax" or self.peak == 0:
            return self.peak
        return (kl_threshold_bin(self.histogram) + 0.5) * self.peak / HISTOGRAM_BINS


def blob_statistics(files: NcnnFiles, blobs: list[str], tensors: Sequence[np.ndarray], method: str,
                    threads: int, step: Callable[[float, str], None]) -> dict[str, BlobStats]:
    """Run the fp32 NCNN model on each tensor and gather each blob's |x| statistics (two passes for KL)."""
    import ncnn

    head = NcnnHead.from_json(files.head.read_text())
    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    if net.load_param(str(files.param)) != 0 or net.load_model(str(files.bin)) != 0:
        raise RuntimeError(f"ncnn could not load {files.param.name}")
    stats = {blob: BlobStats() for blob in blobs}
    passes = 1 if method == "minmax" else 2
    for done in range(passes):
        for index, tensor in enumerate(tensors):
            step((done * len(tensors) + index) / (passes * len(tensors)),
                 f"{'histograms' if done else 'ranges'} of frame {index + 1}/{len(tensors)}")
            image = np.ascontiguousarray(tensor[0], dtype=np.float32)  # held: ncnn.Mat wraps its memory, no copy
            extractor = net.create_extractor()
            extractor.set_light_mode(False)  # keep every blob: each is read once, all from one forward pass
            extractor.input(head.input, ncnn.Mat(image))
            for blob in blobs:
                status, mat = extractor.extract(blob)
                if status != 0:
                    raise RuntimeError(f"ncnn could not compute {blob} of {files.param.name}")
                values = np.abs(np.array(mat)).ravel()
                entry = stats[blob]
                if done == 0:
                    entry.peak = max(entry.peak, float(values.max(initial=0.0)))
                elif entry.peak > 0:
                    values = values[values > 0]
                    bins = np.minimum((values / entry.peak * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
                    entry.histogram += np.bincount(bins, minlength=HISTOGRAM_BINS)
    return stats


# --- the model ------------------------------------------------------------------------------------------------------

def float_convolutions(layers: list[Layer], head: NcnnHead, keep: frozenset[str]) -> set[str]:
    """Names of the convolutions to leave in float: the ones making the head's maps, and/or the first one."""
    names = set()
    producers = {blob: layer for layer in layers for blob in layer.outputs}
    if KEEP_HEAD in keep:
        pending = [blob for level in head.levels for blob in level]
        while pending:
            layer = producers.get(pending.pop())
            if layer is None:
                continue
            if layer.kind in CONVOLUTIONS:
                names.add(layer.name)
            elif layer.kind in ("Concat", "Split"):  # a map made of two convs, or a copy of one
                pending.extend(layer.inputs)
    if KEEP_WINOGRAD in keep:
        names.update(layer.name for layer in layers if layer.kind in CONVOLUTIONS and weight_levels(layer) == 31)
    if KEEP_FIRST in keep:
        first = next((layer for layer in layers if layer.kind in CONVOLUTIONS), None)
        if first is not None:
            names.add(first.name)
    return names


def build_ncnn_int8(build: NcnnBuild, tensors: Sequence[np.ndarray], method: str = "minmax",
                    keep: frozenset[str] | None = None, threads: int = 1,
                    on_progress: Progress | None = None, cancel: threading.Event | None = None) -> Int8Report:
    """Write the int8 model of an NCNN build, calibrated on preprocessed 1x3xHxW tensors; return what it did.

    keep names the convolutions left float (KEEP_HEAD, KEEP_FIRST, KEEP_WINOGRAD); None: device_keep(), what suits
    the CPU it runs on (the model is calibrated on the device, so it is made for it).
    Raises Int8Cancelled when cancel is set (checked between frames), ValueError for no frames or a bad method,
    RuntimeError when the build has no model or its files are not the writer's current output for its ONNX.
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    if not tensors:
        raise ValueError("the int8 model needs at least one calibration frame")
    if build.files is None:
        raise RuntimeError(build.reason or "there is no NCNN model to quantize")

    def step(fraction: float, message: str) -> None:
        if cancel is not None and cancel.is_set():
            raise Int8Cancelled("making the NCNN int8 model was cancelled")
        if on_progress is not None:
            on_progress("ncnn-int8", min(1.0, fraction), message)

    step(0.0, "reading the fp32 model")
    files, out = build.files, build.files.int8()
    onnx_path = source_onnx(files)
    if not cached(onnx_path, files):
        raise RuntimeError(f"the NCNN model beside {onnx_path.name} is missing or stale")
    layers, _, _ = Translation(onnx.load(str(onnx_path))).translate()
    if param_text(layers) != files.param.read_text():  # the weights below must be those of the files calibrated
        raise RuntimeError(f"{files.param.name} is not what the writer makes of {onnx_path.name}")
    head = NcnnHead.from_json(files.head.read_text())
    kept = float_convolutions(layers, head, device_keep() if keep is None else keep)
    chosen = [layer for layer in layers if layer.kind in CONVOLUTIONS and layer.name not in kept]
    blobs = list(dict.fromkeys(layer.inputs[0] for layer in chosen))
    stats = blob_statistics(files, blobs, tensors, method, threads, lambda f, m: step(0.05 + 0.85 * f, m))
    step(0.9, "quantizing the convolutions")
    scales = {}
    for blob in blobs:
        threshold = stats[blob].threshold(method)
        scales[blob] = 127.0 / threshold if threshold > 0 else 1.0
    by_name = {layer.name: quantized_layer(layer, scales[layer.inputs[0]]) for layer in chosen}
    int8_layers = [by_name.get(layer.name, layer) for layer in layers]
    step(0.95, "writing the int8 model")
    out.head.unlink(missing_ok=True)
    write_text(out.param, param_text(int8_layers))
    with atomic_write(out.bin) as handle:
        write_weights(int8_layers, handle)
    write_text(out.head, files.head.read_text())
    seconds = time.perf_counter() - started
    logger.info("wrote %s: %d convolutions int8 (%s on %d frames), %d float, in %.1f s", out.param.name,
                len(chosen), method, len(tensors), len(kept), seconds)
    if on_progress is not None:
        on_progress("ncnn-int8", 1.0, "the NCNN int8 model is written")
    return Int8Report(out, method, len(tensors), [layer.name for layer in chosen], sorted(kept), seconds)
