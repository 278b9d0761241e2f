"""Turn an uploaded YOLOv8 .pt into ONNX with the built-in converter, in the server's own process, without torch.

The checkpoint is read by the inert reader (server.models.checkpoint: nothing it names is imported or called), its
tensors by server.models.torch_zip and the graph is built by server.models.yolov8_onnx with numpy and onnx. The result
is cached by the .pt's SHA-256, so converting the same weights again costs one hash (none for an upload, hashed as it
arrived). One flow (convert_pt) serves the server and the tools: the checkpoint is opened once, identified (cached or
not) and converted from what was read; convert_cached names its ONNX in the cache (server.models.acceptance, the
tools), convert_to_onnx writes it where a tool or test asks.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from server.models.checkpoint import Checkpoint, attrs, open_checkpoint
from server.files import sha256_of, write_bytes
from server.layout import cached_onnx_in
from server.models.identify import identify_checkpoint, model_object
from server.models.info import ModelInfo, ModelRejected
from server.models.onnx_info import load_onnx
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


def cached_onnx_path(weights: str | Path, cache_dir: str | Path, sha256: str | None = None) -> Path:
    """Return where the ONNX of uploaded weights is cached: cache_dir/<their sha256>.onnx (a .pt's conversion).

    sha256 is the weights' digest when it is known already (an upload is hashed as it arrives); else the file is read.
    """
    return cached_onnx_in(Path(cache_dir), sha256 or sha256_of(weights))


@dataclass(frozen=True)
class Conversion:
    """A .pt's ONNX: its file, the graph itself (built now, or the cached file parsed) and what the checkpoint is."""

    onnx_path: Path
    graph: onnx.ModelProto
    checkpoint: ModelInfo
    seconds: float
    cached: bool


def convert_cached(
    pt_path: str | Path,
    cache_dir: str | Path,
    sha256: str | None = None,
    timeout: float = 300,
    on_progress: ProgressCallback | None = None,
    space: DiskSpace | None = None,
) -> Conversion:
    """Return cache_dir/<sha256 of the .pt>.onnx, converted unless it is there already, at the size the checkpoint
    was trained at: the server's acceptance and the tools take a .pt to ONNX here (by convert_pt, the one flow).

    The checkpoint is read and identified either way, so a file that is not YOLOv8 detect is refused with the same
    words whether or not the cache holds a conversion of it. sha256 spares hashing the file when the caller hashed
    it already; with space, a conversion the disk has no room for is InsufficientStorage before it starts.
    """
    target = cached_onnx_path(pt_path, cache_dir, sha256)
    return convert_pt(pt_path, target, timeout=timeout, on_progress=on_progress, space=space, reuse=True)


def convert_to_onnx(
    pt_path: str | Path,
    onnx_path: str | Path,
    imgsz: int | None = None,
    timeout: float = 300,
    on_progress: ProgressCallback | None = None,
    space: DiskSpace | None = None,
) -> float:
    """Convert pt_path to onnx_path (written atomically) by the same flow; return the seconds it took.

    imgsz is the size written into the ONNX's metadata (the size the server first runs it at); by default the
    size the checkpoint was trained at (train_args), as in the cache.
    """
    return convert_pt(pt_path, onnx_path, imgsz, timeout, on_progress, space).seconds


def convert_pt(pt_path: str | Path, onnx_path: str | Path, imgsz: int | None = None, timeout: float = 300,
               on_progress: ProgressCallback | None = None, space: DiskSpace | None = None,
               reuse: bool = False) -> Conversion:
    """Read a .pt once, refuse what is not YOLOv8 detect, and build its ONNX at onnx_path from what was read
    (reuse: parse onnx_path instead when it exists). Raises ModelRejected or InsufficientStorage."""
    started = time.monotonic()
    onnx_path = Path(onnx_path)
    report = on_progress or ignore_progress
    report("reading", 0.1, "reading the checkpoint")
    with open_checkpoint(pt_path) as checkpoint:
        info = identify_checkpoint(checkpoint.top, checkpoint.globals_seen)
        if reuse and onnx_path.is_file():
            logger.info("using cached conversion %s", onnx_path.name)
            report("reading", 0.8, "using the cached ONNX conversion")
            return Conversion(onnx_path, load_onnx(onnx_path), info, time.monotonic() - started, cached=True)
        with room_for_conversion(pt_path, space):
            graph = convert_checkpoint(checkpoint, info, onnx_path, imgsz or info.imgsz, timeout, on_progress,
                                       started)
    seconds = time.monotonic() - started
    logger.info("converted %s to ONNX in %.2f s", Path(pt_path).name, seconds)
    return Conversion(onnx_path, graph, info, seconds, cached=False)


def ignore_progress(stage: str, progress: float, message: str) -> None:
    """The progress callback of a caller that shows none."""


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
    imgsz: int,
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

