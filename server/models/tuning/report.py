"""The engine timing's report: what was measured and picked, cached beside the model per device, and its names.

A report is for one fp32 file on one device (DEVICE_KEYS): cached_tuning finds it again after a restart, and a
different file or CPU makes it stale.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnxruntime as ort

from server.files import write_text
from server.layout import int8_candidate_beside, int8_onnx_beside, timing_report_beside
from server.models.tuning.judging import TIMING_ROUNDS, TuneRow

logger = logging.getLogger(__name__)


@dataclass
class TuneReport:
    """The outcome of tuning: the recipe kept, where the model is, and everything that was tried."""

    chosen: str
    path: str
    qualified: bool
    min_agreement: float
    fp32_ms: float
    imgsz: int
    input_hw: list[int]
    agreement_conf: float
    reference_boxes: int
    calibration_frames: int
    held_back_frames: int
    seconds: float
    note: str
    rows: list[TuneRow]
    source: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    agreement_method: str = "map50"  # or "score-map" when fp32 found too few boxes (see judging)
    timing_rounds: int = TIMING_ROUNDS
    auto: dict = field(default_factory=dict)  # what engine auto runs: {engine, precision, threads, row, why}

    def as_dict(self) -> dict:
        """Return the report as JSON-serialisable data."""
        return asdict(self)


def load_report(path: str | Path) -> TuneReport:
    """Read a report written by tune."""
    data = json.loads(Path(path).read_text())
    data["rows"] = [TuneRow(**row) for row in data["rows"]]
    return TuneReport(**data)


def report_path_for(model_path: str | Path) -> Path:
    """Return where the tuning report of a quantized model lives."""
    return timing_report_beside(Path(model_path))


def int8_path_for(fp32_onnx: str | Path) -> Path:
    """Return the name the int8 variants of an fp32 ONNX are cached under, next to it (its report: .json)."""
    return int8_onnx_beside(Path(fp32_onnx))


def candidate_path_for(out_path: str | Path, recipe: str) -> Path:
    """Return where one recipe's model is kept: every candidate stays, so a new min_agreement needs no retuning."""
    return int8_candidate_beside(Path(out_path), recipe)


def fingerprint(path: str | Path) -> dict:
    """Identify a model file cheaply (name, size, modification time) to tell when a cache is stale."""
    stat = Path(path).stat()
    return {"name": Path(path).name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cached_tuning(fp32_onnx: str | Path, out_path: str | Path | None = None,
                  min_agreement: float | None = None) -> TuneReport | None:
    """Return the report of an int8 model already tuned from this very fp32 file on this CPU, or None.

    A different min_agreement (when given) also makes the cached choice stale.
    """
    report_path = report_path_for(out_path or int8_path_for(fp32_onnx))
    try:
        report = load_report(report_path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as error:
        logger.warning("ignoring unreadable tuning report %s: %s", report_path, error)
        return None
    if report.path and not Path(report.path).is_file():
        return None
    here = machine_info()
    same_cpu = all(report.machine.get(key) == here[key] for key in DEVICE_KEYS)
    same_bar = min_agreement is None or abs(report.min_agreement - min_agreement) < 1e-9
    try:
        same_source = report.source == fingerprint(fp32_onnx)
    except FileNotFoundError:  # the fp32 model was deleted meanwhile (reset)
        return None
    return report if same_source and same_cpu and same_bar else None


DEVICE_KEYS = ("machine", "cpu_count", "cpu_features", "onnxruntime", "ncnn")  # a cached verdict is for these


def machine_info() -> dict:
    """Describe the device (CPU, cores, engine versions), to tell whether a cached tuning still applies."""
    flags = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        line = next((line for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))), "")
        flags = f" {line.split(':', 1)[-1]} "
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
    return {
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "ncnn": _version_of("ncnn"),
        "cpu_count": os.cpu_count(),
        "cpu_features": [name for name in wanted if f" {name} " in flags],
    }


def _version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_report(report: TuneReport, path: Path) -> None:
    """Write a report as JSON, atomically."""
    write_text(path, json.dumps(report.as_dict(), indent=2))
