"""Turn an uploaded YOLOv8 .pt into ONNX with the built-in converter, in the server's own process, without torch.

The checkpoint is read by the inert reader (server.models.checkpoint: nothing it names is imported or called), its
tensors by server.models.torch_zip and the graph is built by server.models.yolov8_onnx with numpy and onnx. The result
is cached by the .pt's SHA-256, so converting the same weights again costs one hash. convert_checkpoint works from a
checkpoint already opened and identified (server.models.acceptance, an upload's path, reads it once);
convert_to_onnx and convert_cached open it themselves (tools, tests).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx

from server.models.checkpoint import Checkpoint, attrs, open_checkpoint
from server.files import sha256_of, write_bytes
from server.models.identify import identify_checkpoint, model_object
from server.models.info import ModelInfo, ModelRejected
from server.models.torch_zip import TensorReader, byteorder_of
from server.models.yolov8_onnx import (
    EXPORT_HINT,
    build_detect_onnx,
    detect_strides_of,
    export_metadata,
)
from server.storage import DiskSpace, is_disk_full

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float, str], None]
# A YOLOv8 .pt holds its weights in fp16 (ultralytics saves them halved) and the ONNX in fp32: twice the
# .pt's size, measured 6.2 MB -> 12.3 MB on the demo model; a margin covers the graph and metadata.
ONNX_BYTES_PER_PT_BYTE = 2
ONNX_MARGIN_BYTES = 1024 * 1024


def onnx_bytes_for(pt_path: str | Path) -> int:
    """Bytes the ONNX conversion of a .pt will take at most, for the free-space check before converting."""
    return ONNX_BYTES_PER_PT_BYTE * Path(pt_path).stat().st_size + ONNX_MARGIN_BYTES


class ConversionFailed(ModelRejected):
    """A .pt that could not be turned into ONNX; the message says why."""


def cached_onnx_path(weights: str | Path, cache_dir: str | Path) -> Path:
    """Return where the ONNX of uploaded weights is cached: cache_dir/<their sha256>.onnx (a .pt's conversion)."""
    return Path(cache_dir) / f"{sha256_of(weights)}.onnx"


def convert_cached(
    pt_path: str | Path,
    cache_dir: str | Path,
    imgsz: int = 640,
    timeout: float = 300,
    on_progress: ProgressCallback | None = None,
    space: DiskSpace | None = None,
) -> Path:
    """Return cache_dir/<sha256 of the .pt>.onnx, converting only when it is not there yet.

    With space, the conversion is refused (InsufficientStorage) before it starts when the disk has no room
    for it, and a disk that fills meanwhile is the same error with nothing written.
    """
    target = cached_onnx_path(pt_path, cache_dir)
    if not target.is_file():
        convert_to_onnx(pt_path, target, imgsz=imgsz, timeout=timeout, on_progress=on_progress, space=space)
        return target
    logger.info("using cached conversion %s", target.name)
    if on_progress:
        on_progress("done", 1.0, "using the cached ONNX conversion")
    return target


def convert_to_onnx(
    pt_path: str | Path,
    onnx_path: str | Path,
    imgsz: int = 640,
    timeout: float = 300,
    on_progress: ProgressCallback | None = None,
    space: DiskSpace | None = None,
) -> float:
    """Convert pt_path to onnx_path (written atomically); return the seconds it took. Raises ModelRejected.

    The checkpoint is read once: identified (the same refusals as at upload) and converted from what was read.
    """
    started = time.monotonic()
    if on_progress:
        on_progress("reading", 0.1, "reading the checkpoint")
    with open_checkpoint(pt_path) as checkpoint:
        info = identify_checkpoint(checkpoint.top, checkpoint.globals_seen)
        with room_for_conversion(pt_path, space):
            convert_checkpoint(checkpoint, info, onnx_path, imgsz, timeout, on_progress, started)
    seconds = time.monotonic() - started
    logger.info("converted %s to ONNX in %.2f s", Path(pt_path).name, seconds)
    if on_progress:
        on_progress("done", 1.0, f"converted to ONNX in {seconds:.1f} s")
    return seconds


@contextlib.contextmanager
def room_for_conversion(pt_path: str | Path, space: DiskSpace | None) -> Iterator[None]:
    """Refuse a conversion the disk has no room for (InsufficientStorage) before it starts; a disk filling
    meanwhile is the same error, with nothing written. Without space nothing is checked."""
    if space is None:
        yield
        return
    needed = onnx_bytes_for(pt_path)
    space.require(needed)
    with space.guard(needed):
        yield


def convert_checkpoint(
    checkpoint: Checkpoint,
    info: ModelInfo,
    onnx_path: str | Path,
    imgsz: int = 640,
    timeout: float = 300,
    on_progress: ProgressCallback | None = None,
    started: float | None = None,
) -> onnx.ModelProto:
    """Build the ONNX graph of an opened checkpoint that identify_checkpoint accepted (info) and write it to
    onnx_path atomically; return the graph. Raises ModelRejected (ConversionFailed when out of time).

    The timeout counts from started (time.monotonic(); by default now): a caller that read the checkpoint first
    counts the reading too.
    """
    started = time.monotonic() if started is None else started
    report = Progress(on_progress, started + timeout, timeout)
    try:
        model = model_object(checkpoint.top)
        order = byteorder_of(checkpoint.archive, checkpoint.prefix)
        tensors = TensorReader(checkpoint.archive, checkpoint.prefix, order)
        report("building", 0.3, "building the ONNX graph from the checkpoint's layers")
        version = str(checkpoint.top.get("version", "unknown")) if isinstance(checkpoint.top, dict) else "unknown"
        metadata = export_metadata(attrs(model), info.classes, imgsz, detect_strides_of(model, tensors), version)
        proto = build_detect_onnx(model, tensors, info.classes, metadata)
        report("checking", 0.8, "checking the ONNX graph")
        serialized = proto.SerializeToString()  # once: the checker and the file share it (270 MB for a YOLOv8x)
        onnx.checker.check_model(serialized)
        write_bytes(onnx_path, serialized)
    except ModelRejected:
        raise
    except Exception as exc:  # a checkpoint shaped in a way the converter did not foresee: a 400, not a 500
        if is_disk_full(exc):  # not the checkpoint's fault: the caller's DiskSpace.guard makes it a 507
            raise
        logger.exception("converting to %s failed", Path(onnx_path).name)
        raise ConversionFailed(f"Converting the .pt to ONNX failed ({type(exc).__name__}); {EXPORT_HINT}") from None
    logger.info("built %s in %.2f s (%d nodes)", Path(onnx_path).name, time.monotonic() - started,
                len(proto.graph.node))
    return proto


class Progress:
    """Pass progress to the callback and stop the conversion between steps once its time is up."""

    def __init__(self, callback: ProgressCallback | None, deadline: float, timeout: float):
        self.callback, self.deadline, self.timeout = callback, deadline, timeout

    def __call__(self, stage: str, progress: float, message: str) -> None:
        if time.monotonic() > self.deadline:
            raise ConversionFailed(f"Converting the .pt to ONNX took longer than {self.timeout:g} s and was stopped")
        if self.callback:
            self.callback(stage, progress, message)

