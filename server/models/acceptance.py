"""Accept uploaded weights: every check, the conversion and the derived copies, reading the upload once.

A model is read once on its way in (one parse of a YOLOv8m's 99 MB ONNX takes 0.12 s of CPU on the x86 test
machine, its pickle 25 ms: bench/acceptance_cost.py); its SHA-256, the cache's key, was taken as it was written to
disk (server.files.HashingWriter), so no step reads it to hash it:
  1. identify it: a .pt's checkpoint is read once by the inert reader (server.models.checkpoint) and kept open;
     an .onnx is parsed once (server.models.onnx_info.load_onnx);
  2. convert a .pt from the checkpoint already read, by the flow the tools use too (server.models.convert:
     convert_cached, which identifies a cached conversion's checkpoint as well); the graph built stays in memory;
  3. check that graph as an export is checked, run the file once in the memory- and time-capped child
     (server.models.trial_run: that run is the protection against a graph that declares one thing and does another,
     so it never moves into this process) and write the NCNN copy from the same graph (server.models.ncnn), unless
     the disk lacks room for it. An uploaded graph runs in the child before the server translates it; a .pt's
     graph, the converter's own, is translated first and let go of before the child runs.

The ONNX the engines run is always cache_dir/<sha256>.onnx: a .pt's conversion, or a hard link to an uploaded .onnx
made once it passed (no copy, no bytes). Derived files (the NCNN copy, int8 variants) sit beside it, so weights
uploaded again reuse them. Refusals are ModelRejected (HTTP 400) and a disk without room InsufficientStorage (507).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from server.files import temporary_name_for
from server.models.convert import ProgressCallback, cached_onnx_path, convert_cached, ignore_progress
from server.models.identify import not_a_model
from server.models.info import ModelInfo, ModelRejected
from server.models.ncnn import NcnnBuild, ncnn_model_for
from server.models.onnx_info import identify_onnx, load_onnx
from server.models.trial_run import TrialBudget, trial_run
from server.storage import DiskSpace, InsufficientStorage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AcceptedModel:
    """Weights that passed every check: the ONNX the engines run, what the model is, and its NCNN copy."""

    onnx_path: Path
    info: ModelInfo
    ncnn: NcnnBuild


def accept_model(
    upload: Path,
    suffix: str,
    cache_dir: Path,
    trial: TrialBudget,
    space: DiskSpace,
    convert_timeout: float,
    on_progress: ProgressCallback | None = None,
    sha256: str | None = None,
) -> AcceptedModel:
    """Check, convert (a .pt) and trial-run uploaded weights, then write their NCNN copy into cache_dir.

    suffix is the upload's extension (.pt or .onnx); sha256 its digest when it was hashed as it arrived (else the
    file is hashed here). Raises ModelRejected or InsufficientStorage; nothing of a refused .onnx is left in
    cache_dir (a refused .pt's conversion stays cached, as its weights would fail again).
    """
    started = time.monotonic()
    report = on_progress or ignore_progress
    if suffix == ".pt":
        accepted = accepted_checkpoint(upload, sha256, cache_dir, trial, space, convert_timeout, report)
    elif suffix == ".onnx":
        accepted = accepted_onnx(upload, sha256, cache_dir, trial, space, report)
    else:
        raise not_a_model(suffix)
    logger.info("accepted %s weights as %s in %.2f s", suffix, accepted.onnx_path.name, time.monotonic() - started)
    return accepted


def accepted_checkpoint(upload: Path, sha256: str | None, cache_dir: Path, trial: TrialBudget, space: DiskSpace,
                        timeout: float, report: ProgressCallback) -> AcceptedModel:
    """Accept a .pt: convert it, check the graph built and write its NCNN copy, then trial-run the ONNX file.

    The graph is the converter's own, so it is translated to NCNN before the trial run and let go of before it:
    holding it (about 4x the ONNX's size in this process, measured) while the child runs would add up on a Pi.
    """
    conversion = convert_cached(upload, cache_dir, sha256, timeout, report, space)
    onnx_path, info = conversion.onnx_path, identify_onnx(conversion.graph)
    report("ncnn", 0.85, "writing the NCNN model")
    ncnn = ncnn_copy(onnx_path, conversion.graph, space)
    del conversion  # the graph goes with it
    report("trial", 0.95, "running the model once in a capped process")
    trial_run(onnx_path, len(info.classes), info.input_hw, trial)
    return AcceptedModel(onnx_path, info, ncnn)


def accepted_onnx(upload: Path, sha256: str | None, cache_dir: Path, trial: TrialBudget, space: DiskSpace,
                  report: ProgressCallback) -> AcceptedModel:
    """Accept an .onnx: parse and check it, trial-run it, then link it into the cache and write its NCNN copy.

    The uploaded graph is untrusted: nothing of the server's translates it before it ran in the capped child.
    """
    report("reading", 0.1, "reading the ONNX model")
    graph = load_onnx(upload)
    report("trial", 0.5, "running the model once in a capped process")
    info = checked(graph, upload, trial)
    onnx_path = link_into_cache(upload, cache_dir, sha256)
    report("ncnn", 0.95, "writing the NCNN model")
    return AcceptedModel(onnx_path, info, ncnn_copy(onnx_path, graph, space))


def recheck(weights: Path, cache_dir: Path, trial: TrialBudget) -> tuple[Path, ModelInfo]:
    """Check stored weights again as an upload is checked (start-up after a crash); return the ONNX the engines run
    and what the model is. A .pt is not read again: its conversion must be in cache_dir (else ModelRejected)."""
    suffix = weights.suffix.lower()
    if suffix == ".pt":
        onnx_path = cached_onnx_path(weights, cache_dir)
        if not onnx_path.is_file():
            raise ModelRejected("its converted ONNX is not in the cache (the conversion never finished)")
        return onnx_path, checked(load_onnx(onnx_path), onnx_path, trial)
    if suffix != ".onnx":
        raise not_a_model(suffix)
    info = checked(load_onnx(weights), weights, trial)
    return link_into_cache(weights, cache_dir), info


def checked(graph: onnx.ModelProto, path: Path, trial: TrialBudget) -> ModelInfo:
    """Identify a parsed ONNX graph, then run its file (path) once in the capped child; raise ModelRejected."""
    info = identify_onnx(graph)
    trial_run(path, len(info.classes), info.input_hw, trial)
    return info


def link_into_cache(onnx_file: Path, cache_dir: Path, sha256: str | None = None) -> Path:
    """Return cache_dir/<sha256>.onnx, made a hard link to onnx_file (checked already) unless it is there."""
    target = cached_onnx_path(onnx_file, cache_dir, sha256)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = temporary_name_for(target)  # a crash between link and rename leaves a name start-up removes
    try:
        os.link(onnx_file, staged)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    return target


def ncnn_copy(onnx_path: Path, graph: onnx.ModelProto, space: DiskSpace) -> NcnnBuild:
    """Write the NCNN copy of a checked graph (well under a second, docs/engines.md) when the disk has room for it."""
    try:
        space.require(onnx_path.stat().st_size)  # the .bin is about the ONNX's size
    except InsufficientStorage as exc:
        return NcnnBuild(None, f"NCNN is not offered for this model: {exc}")
    return ncnn_model_for(onnx_path, graph)
