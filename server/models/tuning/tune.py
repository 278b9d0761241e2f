"""One engine timing of a YOLOv8 ONNX model on this CPU and the user's own frames: every engine, judged alike.

Which engine x precision x threads is fastest depends on the CPU, and how much a precision changes the detections
depends on the model and the scenes. So ONNX Runtime's int8 recipes are built (recipes), calibrated on the user's
frames (calibration) and, with every other engine the model offers (made by its backend first: NCNN int8), timed
against ONNX Runtime fp32 in the same interleaved rounds and checked for agreement with it on held-back frames
(judging). The int8 recipe kept and the row `auto` runs are written, with a report, next to the fp32 model.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from server.files import copy_file
from server.layout import TIMING_WORK_PREFIX
from server.models.tuning.calibration import (
    CACHE_SUPPORTED,
    Calibration,
    calibrate,
    split_frames,
    spread,
)
from server.models.tuning.judging import (
    SCORE_MAP,
    TIMED_FRAMES,
    TIMING_ROUNDS,
    HeldBack,
    TuneRow,
    agreement,
    choose,
    collect_held_back,
    time_models,
    timing_rows,
)
from server.models.tuning.progress import TIMING, Progress, Steps, TimingCancelled
from server.models.tuning.quiet import quiet_quantizer
from server.models.tuning.recipes import (
    DEFAULT_RECIPES,
    RECIPES_BY_NAME,
    Recipe,
    preprocess_model,
    quantize_with,
    walk_head,
)
from server.models.tuning.report import (
    TuneReport,
    cached_tuning,
    candidate_path_for,
    fingerprint,
    int8_path_for,
    machine_info,
    report_path_for,
    write_report,
)
from server.models import choice
from server.vision import processing
from server.vision.detector import Detector
from server.vision.engines import EngineKey
from server.vision.turns import InferenceTurns

logger = logging.getLogger(__name__)

# the report's names, which the tools import from here
__all__ = ["TimingHooks", "TimingRequest", "TuneReport", "cached_tuning", "int8_path_for", "machine_info", "rejudge",
           "report_path_for", "time_engines"]

REFERENCE_ROW = "onnxruntime-fp32"  # the row every other is judged against
Engines = dict[str, tuple[EngineKey, Callable[[], Detector]]]  # auto's other rows: name -> key, loader


@dataclass(frozen=True)
class TimingRequest:
    """What one timing measures: at which input size, against which agreement bar, the reference's threads (None:
    the detector's default) and ONNX Runtime's int8 recipes (None: DEFAULT_RECIPES)."""

    imgsz: int
    min_agreement: float = 0.90
    threads: int | None = None
    recipes: Sequence[Recipe | str] | None = None


@dataclass(frozen=True)
class TimingHooks:
    """What a timing runs beside, all optional.

    on_progress(stage, 0..1, message); cancel stops the work at the next step or frame (TimingCancelled) and
    nothing is written; disk_guard (server.storage.DiskSpace.guard) wraps the work, so that a disk that fills is
    judged before the work folder is removed; engines(calibration tensors, progress) makes what the other engines
    need from the frames (NCNN int8) and lists auto's other rows, name -> EngineKey and a loader; turns is shared
    with the stream's detectors (server.vision.turns), so a candidate is timed alone on the CPU while the stream
    plays (None when nothing streams beside the run: the tools).
    """

    on_progress: Progress | None = None
    cancel: threading.Event | None = None
    disk_guard: contextlib.AbstractContextManager | None = None
    engines: Callable[[list[np.ndarray], Progress], Engines] | None = None
    turns: InferenceTurns | None = None


def time_engines(fp32_onnx: Path, frames: list[np.ndarray], request: TimingRequest,
                 hooks: TimingHooks = TimingHooks()) -> TuneReport:
    """Time every engine on frames, keep the fastest int8 recipe that agrees with fp32 and pick auto's row.

    Every recipe that could be built is kept beside fp32_onnx (candidate_path_for(int8_path_for(fp32_onnx), name))
    with the report at report_path_for(int8_path_for(fp32_onnx)); report.path is the chosen recipe's model and
    report.auto the row auto runs (ONNX Runtime fp32 unless another is faster beyond the noise).
    """
    started = time.perf_counter()
    quiet_quantizer()
    fp32_onnx = Path(fp32_onnx)
    out_path = int8_path_for(fp32_onnx)
    threads, min_agreement, imgsz = request.threads, request.min_agreement, request.imgsz
    chosen_recipes = [RECIPES_BY_NAME[r] if isinstance(r, str) else r for r in (request.recipes or DEFAULT_RECIPES)]
    methods = sorted({r.calibration for r in chosen_recipes})
    plan = ["prepare", "reference", *["calibrate"] * len(methods), *["quantize", "agreement"] * len(chosen_recipes),
            *(["engines"] if hooks.engines else []), TIMING, "save"]
    steps = Steps(plan, hooks.on_progress, hooks.cancel, turns=hooks.turns or InferenceTurns())
    calibration_frames, held_frames = split_frames(frames)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The work folder sits next to the result, hidden, so that a crash leaves it where start-up cleaning finds it.
    with tempfile.TemporaryDirectory(prefix=TIMING_WORK_PREFIX, dir=out_path.parent) as work, \
            hooks.disk_guard or contextlib.nullcontext():
        work_dir = Path(work)
        steps.report("preparing", "pre-processing the fp32 model")
        prepared = preprocess_model(fp32_onnx, work_dir / "prepared.onnx")
        tail, head_convs = walk_head(onnx.load(str(prepared)))
        steps.finish()

        steps.report("measuring", "running fp32 on held-back frames until it has enough boxes")
        reference = Detector(fp32_onnx, threads=threads)
        held = collect_held_back(reference, held_frames, imgsz, steps.check)
        input_hw = reference.input_hw(held.frame_hw, imgsz)
        calibration_tensors = [processing.preprocess(f, input_hw)[0] for f in calibration_frames]
        steps.inference_s[REFERENCE_ROW] = _in_turns(reference, held.tensors[:1], steps.turns)[1]
        steps.timing_inferences = TIMING_ROUNDS * (len(spread(held.tensors, TIMED_FRAMES)) + 1)
        steps.finish()

        calibrations = {m: _calibrate_step(m, prepared, reference.engine.input_name, calibration_tensors, work_dir, steps)
                        for m in methods}
        rows, candidates = [], {}
        for recipe in chosen_recipes:
            path = work_dir / f"{recipe.name}.onnx"
            row, detector = _try_recipe(recipe, prepared, path, calibrations[recipe.calibration],
                                        (tail, head_convs), held, threads, steps)
            rows.append(row)
            if detector is not None:
                candidates[recipe.name] = detector
        others = _other_engines(hooks.engines, calibration_tensors, steps)
        for name, (key, load) in others.items():
            row, detector = _try_engine(name, key, load, held, steps)
            rows.append(row)
            if detector is not None:
                candidates[name] = detector
        fp32_ms = _time_candidates(reference, candidates, rows, held, steps)

        for row in rows:
            if row.is_recipe:
                row.threads = reference.threads
        rows.insert(0, TuneRow(REFERENCE_ROW, fp32_ms, 1.0, 1.0, noise=0.0, engine="onnxruntime", precision="fp32",
                               threads=reference.threads))
        best, qualified, auto = judge(rows, min_agreement)
        steps.report("saving", f"keeping {best.recipe if best else 'no int8 recipe'}; auto runs {auto['row']}")
        for name, detector in candidates.items():
            if name not in others:
                copy_file(detector.path, candidate_path_for(out_path, name))
    report = TuneReport(
        chosen=best.recipe if best else "",
        path=str(candidate_path_for(out_path, best.recipe)) if best else "",
        qualified=qualified,
        min_agreement=min_agreement,
        fp32_ms=fp32_ms,
        imgsz=imgsz,
        input_hw=list(input_hw),
        agreement_conf=held.conf,
        reference_boxes=held.reference_boxes(),
        calibration_frames=len(calibration_tensors),
        held_back_frames=len(held.tensors),
        seconds=round(time.perf_counter() - started, 1),
        note=_note(best, qualified, min_agreement, held, auto=auto),
        rows=rows,
        source=fingerprint(fp32_onnx),
        machine={**machine_info(), "threads": reference.threads},
        agreement_method=held.method,
        auto=auto,
    )
    write_report(report, report_path_for(out_path))
    steps.done = steps.total
    steps.report("done", report.note)
    logger.info("the engine timing took %.0f s: %s", report.seconds, report.note)
    return report


def rejudge(report: TuneReport, out_path: Path, min_agreement: float) -> TuneReport:
    """Choose again among the recipes already measured, for another min_agreement; write and return the report."""
    rows = [TuneRow(**{**asdict(row), "chosen": False}) for row in report.rows]
    for row in rows:  # a recipe whose model is gone cannot be chosen again
        if row.is_recipe and row.error is None and not candidate_path_for(out_path, row.recipe).is_file():
            row.error = "its model file is gone"
    best, qualified, auto = judge(rows, min_agreement)
    held = HeldBack(tuple(report.input_hw), [], [], [], report.agreement_conf, report.agreement_method)
    updated = TuneReport(**{
        **{key: getattr(report, key) for key in report.__dataclass_fields__},
        "chosen": best.recipe if best else "", "path": str(candidate_path_for(out_path, best.recipe)) if best else "",
        "qualified": qualified, "min_agreement": min_agreement, "rows": rows, "auto": auto,
        "note": _note(best, qualified, min_agreement, held, report.reference_boxes, auto),
    })  # fmt: skip
    write_report(updated, report_path_for(out_path))
    logger.info("the engine timing re-judged for min_agreement %.2f: %s", min_agreement, updated.note)
    return updated


def judge(rows: list[TuneRow], min_agreement: float) -> tuple[TuneRow | None, bool, dict]:
    """Choose the int8 recipe to keep (None when none could be built) and the row auto runs, marking both.

    Auto picks among ONNX Runtime fp32, the kept recipe and the other engines' rows; the other recipes are there
    for the int8 setting only.
    """
    recipes = [row for row in rows if row.is_recipe]
    for row in recipes:
        row.chosen = False
    best, qualified = (None, False)
    if any(row.error is None for row in recipes):
        best, qualified = choose(recipes, min_agreement)
        best.chosen = True
    candidates = [row for row in rows if not row.is_recipe or row is best]
    picked = choice.pick(candidates, min_agreement)
    for row in recipes:
        if row is not best:
            row.picked, row.why = False, row.error and f"could not run: {row.error}" or "not the int8 recipe kept"
    auto = {"engine": picked.engine, "precision": picked.precision, "threads": picked.threads,
            "row": picked.recipe, "why": picked.why}
    return best, qualified, auto


def _note(best: TuneRow | None, qualified: bool, min_agreement: float, held: HeldBack,
          reference_boxes: int | None = None, auto: dict | None = None) -> str:
    if best is None:
        note = "no int8 recipe could be built"
    elif qualified:
        note = f"{best.recipe}: the fastest recipe with agreement >= {min_agreement:.2f}"
    else:
        note = f"no recipe reached agreement {min_agreement:.2f}; kept the most accurate, {best.recipe}"
    if auto:
        note += f"; auto runs {auto['engine']} {auto['precision']} ({auto['threads']} threads): {auto['why']}"
    if held.method == SCORE_MAP:
        boxes = held.reference_boxes() if reference_boxes is None else reference_boxes
        note += (f" (fp32 found only {boxes} boxes on the held-back frames, so agreement compares the raw "
                 "class-score maps instead of boxes)")
    return note


def _calibrate_step(method: str, prepared: Path, input_name: str, tensors: list[np.ndarray], work_dir: Path,
                    steps: Steps) -> Calibration:
    """Calibrate once per method (when onnxruntime can cache it), reporting progress frame by frame."""

    def on_frame(index: int) -> None:
        steps.report("calibrating", f"calibrating ({method}) on frame {index + 1}/{len(tensors)}",
                     index / len(tensors))

    calibration = Calibration(method, input_name, tensors)
    steps.report("calibrating", f"calibrating ({method}) on {len(tensors)} frames")
    if CACHE_SUPPORTED:
        calibrate(calibration, prepared, work_dir / f"calibration-{method}.json", on_frame)
    steps.finish()
    return calibration


def _try_recipe(recipe: Recipe, prepared: Path, path: Path, calibration: Calibration,
                head: tuple[list[str], list[str]], held: HeldBack, threads: int | None,
                steps: Steps) -> tuple[TuneRow, Detector | None]:
    """Build one recipe and measure its agreement; a recipe that fails becomes a row with its error."""
    settings = {key: value for key, value in asdict(recipe).items() if key != "name"}
    first_step = steps.done
    try:
        steps.report("quantizing", f"quantizing with {recipe.name}")
        quantize_with(recipe, prepared, path, calibration, *head)
        steps.finish()
        steps.report("measuring", f"agreement of {recipe.name} with fp32 on {len(held.tensors)} frames")
        candidate = Detector(path, threads=threads)
        score = agreement(_run_held_back(recipe.name, candidate, held, steps), held)
    except TimingCancelled:
        raise
    except Exception as error:  # a recipe this CPU or ONNX Runtime cannot run must not end the tuning
        logger.warning("int8 recipe %s failed: %s", recipe.name, error)
        steps.skip_to(first_step + 2)
        return TuneRow(recipe.name, None, None, None, error=str(error), settings=settings), None
    steps.finish()
    return TuneRow(recipe.name, None, None, round(score, 4), settings=settings), candidate


def _other_engines(engines: Callable[[list[np.ndarray], Progress], Engines] | None, tensors: list[np.ndarray],
                   steps: Steps) -> Engines:
    """Make what auto's other engines need from the calibration frames and list them (a step, then 2 per engine)."""
    if engines is None:
        return {}
    steps.report("preparing", "preparing the other engines")
    others = engines(tensors, lambda stage, fraction, message: steps.report(stage, message, fraction))
    steps.finish()
    steps.add_before(TIMING, ["load", "agreement"] * len(others))
    return others


def _try_engine(name: str, key: EngineKey, load: Callable[[], Detector], held: HeldBack,
                steps: Steps) -> tuple[TuneRow, Detector | None]:
    """Load one of auto's other engines and measure its agreement; one that fails becomes a row with its error."""
    first_step = steps.done
    row = TuneRow(name, None, None, None, engine=key.engine, precision=key.precision, threads=key.threads)
    try:
        steps.report("loading", f"loading {key.engine} {key.precision} with {key.threads} threads")
        detector = load()
        detector.warm_up(tuple(held.tensors[0].shape[2:]))
        steps.finish()
        row.agreement = round(agreement(_run_held_back(name, detector, held, steps), held), 4)
    except TimingCancelled:
        raise
    except Exception as error:  # an engine this model or CPU cannot run is a row saying so, not a failed tuning
        logger.warning("engine %s failed: %s", name, error)
        row.error, detector = str(error), None
        steps.skip_to(first_step + 2)
        return row, detector
    steps.finish()
    return row, detector


def _run_held_back(name: str, detector: Detector, held: HeldBack, steps: Steps) -> list[np.ndarray]:
    """Run a candidate on the held-back frames (its agreement's outputs), learning its time per inference."""

    def before(index: int) -> None:
        steps.report("measuring", f"agreement of {name} with fp32, frame {index + 1}/{len(held.tensors)}",
                     index / len(held.tensors))

    outputs, steps.inference_s[name] = _in_turns(detector, held.tensors, steps.turns, before)
    return outputs


def _in_turns(detector: Detector, tensors: list[np.ndarray], turns: InferenceTurns,
              before: Callable[[int], None] = lambda index: None) -> tuple[list[np.ndarray], float]:
    """Run detector on each tensor in the timing's turns at the CPU; return the outputs and the seconds an inference
    took, the stream's turn included (as the timing rounds will take them)."""
    outputs = []
    started = time.perf_counter()
    for index, tensor in enumerate(tensors):
        before(index)
        with turns.timed():
            outputs.append(detector.infer(tensor))
        turns.rest()
    return outputs, (time.perf_counter() - started) / max(1, len(tensors))


def _time_candidates(reference: Detector, candidates: dict[str, Detector], rows: list[TuneRow], held: HeldBack,
                     steps: Steps) -> float:
    """Time fp32 and every candidate in shared interleaved rounds; fill the rows' ms, speed-up and noise."""
    names = list(candidates)
    detectors = [reference, *candidates.values()]
    medians = time_models(
        detectors, spread(held.tensors, TIMED_FRAMES), turns=steps.turns,
        on_round=lambda done: steps.report("timing", f"timing fp32 and {len(names)} candidates, round "
                                           f"{done + 1}/{TIMING_ROUNDS}", done / TIMING_ROUNDS),
    )  # fmt: skip
    fp32_ms, timed = timing_rows(medians)
    by_name = {row.recipe: row for row in rows}
    for name, (ms, speedup, noise) in zip(names, timed):
        row = by_name[name]
        row.ms, row.speedup, row.noise = ms, speedup, noise
        row.settings["fp32_ms"] = fp32_ms
        logger.info("%s: %.1f ms (fp32 %.1f ms), x%.2f +- %.2f, agreement %.3f",
                    name, ms, fp32_ms, speedup, noise, row.agreement)
    steps.finish()
    return fp32_ms
