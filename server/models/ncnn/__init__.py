"""NCNN models written by the project's own code from a YOLOv8 detect ONNX graph (no pnnx, no torch).

translate.py maps the ONNX ops up to the head's raw per-level maps (cut.py finds them) to ncnn layers, param.py
writes the .param text and weights.py the .bin. The three files (.param, .bin and a .json saying how to decode the
maps) are cached beside the ONNX under names derived from it (server.vision.engines.ncnn_engine.NcnnFiles), each
written under a temporary name and renamed into place, the .json last; reset deletes them with the ONNX's folder.
A model with an op that does not translate keeps ONNX Runtime only, and NcnnBuild.reason says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from server.files import atomic_write, write_text
from server.models.ncnn.cut import Untranslatable
from server.models.ncnn.param import param_text
from server.models.ncnn.translate import INPUT_BLOB, Translation
from server.models.ncnn.weights import write_weights
from server.vision.engines.ncnn_engine import HEAD_FORMAT, NcnnFiles, NcnnHead

logger = logging.getLogger(__name__)

__all__ = ["NcnnBuild", "Untranslatable", "ncnn_model_for", "write_ncnn"]


@dataclass(frozen=True)
class NcnnBuild:
    """The NCNN model of an ONNX, or why there is none."""

    files: NcnnFiles | None
    reason: str | None = None
    seconds: float = 0.0  # what writing it took (0 when it came from the cache)


def source_of(onnx_path: Path) -> dict:
    """Identify the ONNX a cache was made from (name, size, modification time) and the writer's format."""
    status = onnx_path.stat()
    return {"onnx": onnx_path.name, "size": status.st_size, "mtime_ns": status.st_mtime_ns, "format": HEAD_FORMAT}


def cached(onnx_path: Path, files: NcnnFiles) -> bool:
    """Whether files hold a whole NCNN model of this very ONNX, written by this format."""
    try:
        head = NcnnHead.from_json(files.head.read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return head.source == source_of(onnx_path) and files.param.is_file() and files.bin.is_file()


def ncnn_model_for(onnx_path: str | Path, model: onnx.ModelProto | None = None) -> NcnnBuild:
    """Return the cached NCNN model of an ONNX, writing it when missing or stale; never raises for a bad graph.

    model is the ONNX already parsed, when the caller has it (else the file is read).
    """
    onnx_path = Path(onnx_path)
    files = NcnnFiles.beside(onnx_path)
    if cached(onnx_path, files):
        return NcnnBuild(files)
    started = time.perf_counter()
    try:
        write_ncnn(onnx_path, files, model)
    except Untranslatable as exc:
        reason = f"NCNN is not offered for this model: {exc}"
        logger.info("%s: %s", onnx_path.name, reason)
        return NcnnBuild(None, reason)
    except Exception as exc:  # a graph shaped in a way the writer did not foresee keeps ONNX Runtime
        logger.exception("writing the NCNN model of %s failed", onnx_path.name)
        return NcnnBuild(None, f"NCNN is not offered for this model: writing it failed ({type(exc).__name__})")
    seconds = time.perf_counter() - started
    logger.info("wrote the NCNN model of %s in %.2f s", onnx_path.name, seconds)
    return NcnnBuild(files, seconds=seconds)


def write_ncnn(onnx_path: Path, files: NcnnFiles, model: onnx.ModelProto | None = None) -> NcnnHead:
    """Translate onnx_path (or model, its parsed graph) into files (.param, .bin, then .json), each atomically;
    raise Untranslatable."""
    model = model if model is not None else onnx.load(str(onnx_path))
    layers, cut, strides = Translation(model).translate()
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in model.graph.input[0].type.tensor_type.shape.dim]
    fixed_hw = (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else None
    meta = {p.key: p.value for p in model.metadata_props}
    stride = int(meta["stride"]) if meta.get("stride", "").isdigit() else int(max(strides))
    head = NcnnHead(INPUT_BLOB, cut.levels, strides, cut.reg_max, cut.classes, cut.bins, fixed_hw, stride,
                    source_of(onnx_path))
    files.head.unlink(missing_ok=True)  # the .json goes first and comes back last: a half-written set is not read
    write_text(files.param, param_text(layers))
    with atomic_write(files.bin) as out:
        write_weights(layers, out)
    write_text(files.head, head.as_json())
    return head
