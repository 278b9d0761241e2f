"""Tune int8 post-training quantization of a YOLOv8 ONNX model on this CPU and the user's own frames.

Which int8 recipe is fastest depends on the CPU (u8 activations on x86, s8/s8 on ARM with
dot-product instructions), and how much a recipe changes the detections depends on the model and
the scenes. So a few recipes are built (recipes), calibrated on the user's frames (calibration), timed
against fp32 and checked for agreement with fp32 on held-back frames (judging); the fastest that
agrees well enough is kept, with a report, next to the fp32 model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from server.models.files import write_atomically
from server.models.int8.calibration import (
    CACHE_SUPPORTED,
    Calibration,
    calibrate,
    split_frames,
    spread,
)
from server.models.int8.judging import (
    TIMED_FRAMES,
    HeldBack,
    TuneRow,
    agreement,
    choose,
    paired_speedup,
    pick_agreement_conf,
    time_models,
)
from server.models.int8.recipes import (
    DEFAULT_RECIPES,
    RECIPES_BY_NAME,
    Recipe,
    _walk_head,
    preprocess_model,
    quantize_with,
)
from server.vision import processing
from server.vision.detector import Detector

logger = logging.getLogger(__name__)



Progress = Callable[[str, float, str], None]


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

    def as_dict(self) -> dict:
        """Return the report as JSON-serialisable data."""
        return asdict(self)

    def chosen_row(self) -> TuneRow:
        """Return the row of the recipe that was kept."""
        return next(row for row in self.rows if row.chosen)


def load_report(path: str | Path) -> TuneReport:
    """Read a report written by tune_int8."""
    data = json.loads(Path(path).read_text())
    data["rows"] = [TuneRow(**row) for row in data["rows"]]
    return TuneReport(**data)


def report_path_for(model_path: str | Path) -> Path:
    """Return where the tuning report of a quantized model lives."""
    return Path(model_path).with_suffix(".json")


def int8_path_for(fp32_onnx: str | Path) -> Path:
    """Return where the tuned int8 model of an fp32 ONNX is cached: next to it."""
    fp32_onnx = Path(fp32_onnx)
    return fp32_onnx.with_name(f"{fp32_onnx.stem}.int8.onnx")


def fingerprint(path: str | Path) -> dict:
    """Identify a model file cheaply (name, size, modification time) to tell when a cache is stale."""
    stat = Path(path).stat()
    return {"name": Path(path).name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cached_tuning(fp32_onnx: str | Path, out_path: str | Path | None = None,
                  min_agreement: float | None = None) -> TuneReport | None:
    """Return the report of an int8 model already tuned from this very fp32 file on this CPU, or None.

    A different min_agreement (when given) also makes the cached choice stale.
    """
    out_path = Path(out_path or int8_path_for(fp32_onnx))
    report_path = report_path_for(out_path)
    if not (out_path.is_file() and report_path.is_file()):
        return None
    try:
        report = load_report(report_path)
    except (ValueError, TypeError, KeyError) as error:
        logger.warning("ignoring unreadable tuning report %s: %s", report_path, error)
        return None
    same_cpu = report.machine.get("cpu_features") == machine_info()["cpu_features"]
    same_bar = min_agreement is None or abs(report.min_agreement - min_agreement) < 1e-9
    return report if report.source == fingerprint(fp32_onnx) and same_cpu and same_bar else None


def machine_info() -> dict:
    """Describe the CPU, to tell whether a cached tuning still applies."""
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
        "cpu_count": os.cpu_count(),
        "cpu_features": [name for name in wanted if f" {name} " in flags],
    }


def write_report(report: TuneReport, path: Path) -> None:
    """Write a report as JSON, atomically."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report.as_dict(), indent=2))
    os.replace(partial, path)


class QuietQuantizer(logging.Filter):
    """Drop the quantizer's per-channel INFO notes, which it logs on the root logger by the hundred."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def quiet_quantizer():
    """Keep onnxruntime's quantization chatter out of the server log while tuning."""
    quiet = QuietQuantizer()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


class _Steps:
    """Turn finished steps into the 0..1 progress the status endpoint shows."""

    def __init__(self, total: int, on_progress: Progress | None):
        self.total, self.done, self.on_progress = total, 0, on_progress

    def report(self, stage: str, message: str, fraction_of_step: float = 0.0) -> None:
        logger.debug("int8 tuning: %s", message)
        if self.on_progress:
            self.on_progress(stage, min(1.0, (self.done + fraction_of_step) / self.total), message)


def tune_int8(
    fp32_onnx: Path,
    frames: list[np.ndarray],
    imgsz: int,
    out_path: Path,
    min_agreement: float = 0.90,
    on_progress: Progress | None = None,
    recipes: Sequence[Recipe | str] | None = None,
    threads: int | None = None,
) -> TuneReport:
    """Build int8 models with a few recipes, keep the fastest that agrees with fp32, write it to out_path."""
    started = time.perf_counter()
    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    chosen_recipes = [RECIPES_BY_NAME[r] if isinstance(r, str) else r for r in (recipes or DEFAULT_RECIPES)]
    methods = sorted({r.calibration for r in chosen_recipes})
    steps = _Steps(2 + len(methods) + 2 * len(chosen_recipes) + 1, on_progress)
    calibration_frames, held_frames = split_frames(frames)
    with tempfile.TemporaryDirectory(prefix="int8-tune-") as work, quiet_quantizer():
        work_dir = Path(work)
        steps.report("preparing", "pre-processing the fp32 model")
        prepared = preprocess_model(fp32_onnx, work_dir / "prepared.onnx")
        tail, head_convs = _walk_head(onnx.load(str(prepared)))
        steps.done += 1

        steps.report("measuring", "running fp32 on the held-back frames")
        reference = Detector(fp32_onnx, threads=threads)
        held = _held_back(reference, held_frames, imgsz)
        input_hw = reference.input_hw(held.frame_hw, imgsz)
        calibration_tensors = [processing.preprocess(f, input_hw)[0] for f in calibration_frames]
        steps.done += 1

        calibrations = {m: _calibrate_step(m, prepared, reference.input_name, calibration_tensors, work_dir, steps)
                        for m in methods}
        rows, paths = [], {}
        for recipe in chosen_recipes:
            path = work_dir / f"{recipe.name}.onnx"
            row = _try_recipe(recipe, prepared, path, calibrations[recipe.calibration], (tail, head_convs),
                              reference, held, threads, steps)
            rows.append(row)
            paths[recipe.name] = path

        best, qualified = choose(rows, min_agreement)
        best.chosen = True
        steps.report("saving", f"keeping {best.recipe}")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(paths[best.recipe], out_path)
    report = TuneReport(
        chosen=best.recipe,
        path=str(out_path),
        qualified=qualified,
        min_agreement=min_agreement,
        fp32_ms=round(float(np.median([r.settings["fp32_ms"] for r in rows if r.error is None])), 2),
        imgsz=imgsz,
        input_hw=list(input_hw),
        agreement_conf=held.conf,
        reference_boxes=held.reference_boxes(),
        calibration_frames=len(calibration_tensors),
        held_back_frames=len(held.tensors),
        seconds=round(time.perf_counter() - started, 1),
        note=_note(best, qualified, min_agreement, held.reference_boxes()),
        rows=rows,
        source=fingerprint(fp32_onnx),
        machine={**machine_info(), "threads": reference.threads},
    )
    write_report(report, report_path_for(out_path))
    steps.done = steps.total
    steps.report("done", report.note)
    logger.info("int8 tuning took %.0f s: %s", report.seconds, report.note)
    return report


def _held_back(reference: Detector, frames: list[np.ndarray], imgsz: int) -> HeldBack:
    """Preprocess the held-back frames and run fp32 on them once."""
    frame_hw = frames[0].shape[:2]
    input_hw = reference.input_hw(frame_hw, imgsz)
    prepared = [processing.preprocess(frame, input_hw) for frame in frames]
    tensors = [tensor for tensor, _ in prepared]
    held = HeldBack(frame_hw, tensors, [box for _, box in prepared], [reference.infer(t) for t in tensors])
    held.conf = pick_agreement_conf(held)
    return held


def _note(best: TuneRow, qualified: bool, min_agreement: float, reference_boxes: int) -> str:
    note = (
        f"{best.recipe}: the fastest recipe with agreement >= {min_agreement:.2f}"
        if qualified
        else f"no recipe reached agreement {min_agreement:.2f}; kept the most accurate, {best.recipe}"
    )
    if reference_boxes == 0:
        note += " (fp32 found nothing on the held-back frames, so agreement says little)"
    return note


def _calibrate_step(method: str, prepared: Path, input_name: str, tensors: list[np.ndarray], work_dir: Path,
                    steps: _Steps) -> Calibration:
    """Calibrate once per method (when onnxruntime can cache it), reporting progress frame by frame."""

    def on_frame(index: int) -> None:
        steps.report("calibrating", f"calibrating ({method}) on frame {index + 1}/{len(tensors)}",
                     index / len(tensors))

    calibration = Calibration(method, input_name, tensors)
    steps.report("calibrating", f"calibrating ({method}) on {len(tensors)} frames")
    if CACHE_SUPPORTED:
        calibrate(calibration, prepared, work_dir / f"calibration-{method}.json", on_frame)
    steps.done += 1
    return calibration


def _try_recipe(recipe: Recipe, prepared: Path, path: Path, calibration: Calibration,
                head: tuple[list[str], list[str]],
                reference: Detector, held: HeldBack, threads: int | None, steps: _Steps) -> TuneRow:
    """Build, time and check one recipe; a recipe that fails becomes a row with its error."""
    settings = {key: value for key, value in asdict(recipe).items() if key != "name"}
    first_step = steps.done
    try:
        steps.report("quantizing", f"quantizing with {recipe.name}")
        quantize_with(recipe, prepared, path, calibration, *head)
        steps.done += 1
        steps.report("measuring", f"timing {recipe.name} against fp32")
        candidate = Detector(path, threads=threads)
        times = time_models([reference, candidate], spread(held.tensors, TIMED_FRAMES))
        fp32_ms, int8_ms = float(np.median(times[:, 0])), float(np.median(times[:, 1]))
        speedup = paired_speedup(times[:, 0], times[:, 1])
        score = agreement([candidate.infer(t) for t in held.tensors], held)
    except Exception as error:  # a recipe this CPU or ONNX Runtime cannot run must not end the tuning
        logger.warning("int8 recipe %s failed: %s", recipe.name, error)
        steps.done = first_step + 2
        return TuneRow(recipe.name, None, None, None, error=str(error), settings=settings)
    steps.done = first_step + 2
    settings["fp32_ms"] = round(fp32_ms, 2)
    logger.info("int8 recipe %s: %.1f ms (fp32 %.1f ms), agreement %.3f", recipe.name, int8_ms, fp32_ms, score)
    return TuneRow(recipe.name, round(int8_ms, 2), round(speedup, 3), round(score, 4), settings=settings)
