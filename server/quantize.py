"""Tune int8 post-training quantization of a YOLOv8 ONNX model on this CPU and the user's own frames.

Which int8 recipe is fastest depends on the CPU (u8 activations on x86, s8/s8 on ARM with
dot-product instructions), and how much a recipe changes the detections depends on the model and
the scenes. So a few recipes are built, timed against fp32 and checked for agreement with fp32 on
held-back frames; the fastest that agrees well enough is kept.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    create_calibrator,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from server import processing
from server.detector import Detector
from server.metrics import mean_average_precision
from server.processing import Detections

logger = logging.getLogger(__name__)

Progress = Callable[[str, float, str], None]

MAX_CALIBRATION_FRAMES = 24
MAX_HELD_BACK_FRAMES = 24
TIMED_FRAMES = 8  # held-back frames each model is timed on, per round
CALIBRATION_CHUNK = 2  # frames per collect call: histogram calibrators hold every activation of a chunk
TIMING_ROUNDS = 3  # turns each model takes over the held-back frames when timing
AGREEMENT_CONFS = (0.25, 0.1, 0.05, 0.01)  # the highest that leaves fp32 boxes to compare with is used
AGREEMENT_IOU = 0.7  # NMS IoU while measuring agreement (the server's default)
SAME_SPEED = 0.05  # recipes this close to the fastest are told apart by agreement instead
HEAD_TAIL_START_OPS = ("Softmax",)  # a Conv fed by one of these belongs to the box decoding (DFL)
SHAPE_ONLY_OPS = ("Shape", "Size")  # read only a tensor's shape: the walk back does not pass them
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
# Recent onnxruntime (1.32 has it) reuses calibration ranges across recipes; older ones calibrate per recipe.
CACHE_SUPPORTED = "calibration_cache_path" in inspect.signature(quantize_static).parameters
QUANT_TYPES = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
FORMATS = {"qdq": QuantFormat.QDQ, "qop": QuantFormat.QOperator}


@dataclass(frozen=True)
class Recipe:
    """One way to quantize: format, activation/weight types, per-channel, reduce_range, calibration."""

    name: str
    activations: str = "u8"
    weights: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False
    calibration: str = "minmax"
    format: str = "qdq"
    float_head_convs: bool = False  # also keep the head's last 1x1 convs (the logits) in float


DEFAULT_RECIPES = (
    Recipe("u8s8-pc"),
    Recipe("u8s8-pc-rr", reduce_range=True),
    Recipe("s8s8-pc", activations="s8"),
    Recipe("u8s8-pc-rr-pctl", reduce_range=True, calibration="percentile"),
    Recipe("s8s8-pc-pctl", activations="s8", calibration="percentile"),
)
RECIPES_BY_NAME = {recipe.name: recipe for recipe in DEFAULT_RECIPES}


@dataclass
class TuneRow:
    """What one recipe measured."""

    recipe: str
    ms: float | None
    speedup: float | None
    agreement: float | None
    chosen: bool = False
    error: str | None = None
    settings: dict = field(default_factory=dict)


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


@dataclass
class HeldBack:
    """Frames kept out of calibration, with fp32's outputs on them: what candidates are judged by."""

    frame_hw: tuple[int, int]
    tensors: list[np.ndarray]
    letterboxes: list[processing.Letterbox]
    reference_outputs: list[np.ndarray]
    conf: float = AGREEMENT_CONFS[0]

    def detections(self, outputs: list[np.ndarray], conf: float) -> list[Detections]:
        """Postprocess raw outputs of the held-back frames at one conf."""
        return [
            processing.postprocess(output, box, self.frame_hw, conf, AGREEMENT_IOU)
            for output, box in zip(outputs, self.letterboxes)
        ]

    def reference_boxes(self) -> int:
        """Count fp32's boxes at the agreement conf."""
        return sum(len(d) for d in self.detections(self.reference_outputs, self.conf))


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


def sample_frames(video_path: str | Path, count: int = 36) -> list[np.ndarray]:
    """Decode up to count frames spread evenly over a video."""
    capture = cv2.VideoCapture(str(video_path))
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(np.linspace(0, max(total - 1, 0), count).round().astype(int)) if total > 0 else None
        frames, index = [], 0
        while len(frames) < count:
            if not capture.grab():
                break
            if wanted is None or index in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    frames.append(frame)
            index += 1
        return frames
    finally:
        capture.release()


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


def head_tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Return the nodes that decode boxes after the Detect head's last convolutions (DFL, concat, sigmoid...)."""
    return _walk_head(model)[0]


def head_output_convs(model: onnx.ModelProto) -> list[str]:
    """Return the Detect head's last convolutions: those whose outputs the box decoding reads."""
    return _walk_head(model)[1]


def _walk_head(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Walk back from the outputs, stopping at every Conv except the DFL one (fed by a Softmax).

    This finds the head tail by topology, whatever the head's module index or node names.
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    tail: set[str] = set()
    stops: set[str] = set()
    pending = [producers[o.name] for o in model.graph.output if o.name in producers]
    while pending:
        node = pending.pop()
        if node.name in tail:
            continue
        if node.op_type == "Conv":
            feeder = producers.get(node.input[0])
            if feeder is None or feeder.op_type not in HEAD_TAIL_START_OPS:
                stops.add(node.name)  # a head convolution: quantizing it is where the speed is
                continue
        tail.add(node.name)
        if node.op_type not in SHAPE_ONLY_OPS:  # anchors come from feature-map shapes, not their values
            pending.extend(producers[name] for name in node.input if name in producers)
    return sorted(tail), sorted(stops)


def name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name, since exclusion lists are by name."""
    taken = {node.name for node in model.graph.node if node.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def preprocess_model(fp32_onnx: Path, out_path: Path) -> Path:
    """Run ONNX Runtime's quantization pre-processing (graph optimization and ONNX shape inference)."""
    # Symbolic shape inference gives up on a dynamic height and width, and when it gives up it dumps
    # sym_shape_infer_temp.onnx plus external-data files into the working directory: skip it.
    quant_pre_process(str(fp32_onnx), str(out_path), skip_symbolic_shape=True)
    model = onnx.load(str(out_path))
    name_unnamed_nodes(model)
    onnx.save(model, str(out_path))
    return out_path


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
    from onnxruntime.quantization import save_tensors_data  # noqa: PLC0415  (only in recent onnxruntime)

    calibrator = create_calibrator(
        prepared,
        augmented_model_path=str(cache.with_suffix(".augmented.onnx")),
        calibrate_method=CALIBRATION_METHODS[calibration.method],
        # Symmetric ranges (percentile's default) waste half of u8 on post-SiLU activations.
        # CalibMaxIntermediateOutputs is left out: onnxruntime 1.31 discarded the ranges with it.
        extra_options={"symmetric": False},
    )
    tensors, chatter = calibration.tensors, io.StringIO()
    with contextlib.redirect_stdout(chatter):  # histogram calibrators print() as they go
        # Collecting chunk by chunk bounds memory; ranges and histograms merge across calls.
        for first in range(0, len(tensors), CALIBRATION_CHUNK):
            chunk = tensors[first : first + CALIBRATION_CHUNK]
            calibrator.collect_data(FrameReader(calibration.input_name, chunk, on_frame, first))
        save_tensors_data(calibrator.compute_data(), cache)
    logger.debug("calibrator output: %s", chatter.getvalue().strip())
    calibration.cache = cache
    return calibration


def quantize_with(recipe: Recipe, prepared: Path, out_path: Path, calibration: Calibration,
                  tail: list[str], head_convs: list[str]) -> Path:
    """Quantize the prepared model with one recipe, from cached ranges or else by calibrating again."""
    reuse = {"calibration_cache_path": str(calibration.cache)} if calibration.cache else {}
    quantize_static(
        str(prepared),
        str(out_path),
        calibration_data_reader=None if calibration.cache else calibration.reader(),
        quant_format=FORMATS[recipe.format],
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=QUANT_TYPES[recipe.activations],
        weight_type=QUANT_TYPES[recipe.weights],
        nodes_to_exclude=tail + head_convs if recipe.float_head_convs else tail,
        calibrate_method=CALIBRATION_METHODS[recipe.calibration],
        extra_options={"CalibTensorRangeSymmetric": False},
        **reuse,
    )
    return out_path


def split_frames(frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split frames alternately into calibration and held-back sets, so both span the whole video."""
    if len(frames) < 2:
        raise ValueError("int8 tuning needs at least two frames")
    return spread(list(frames[0::2]), MAX_CALIBRATION_FRAMES), spread(list(frames[1::2]), MAX_HELD_BACK_FRAMES)


def spread(items: list, count: int) -> list:
    """Return at most count items picked evenly across the list."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def time_models(detectors: list[Detector], tensors: list[np.ndarray], rounds: int = TIMING_ROUNDS) -> np.ndarray:
    """Return the median ms per inference of each detector (columns) in each round (rows).

    Models take turns a block of inputs at a time, so load that comes and goes hits all alike;
    not input by input, because a session's idle threads keep spinning for a while and would slow
    down the next session's run.
    """
    medians = np.zeros((rounds, len(detectors)))
    for round_index in range(rounds):
        order = range(len(detectors)) if round_index % 2 == 0 else reversed(range(len(detectors)))
        for column in order:
            detector = detectors[column]
            detector.infer(tensors[0])  # wake this session's threads
            times = []
            for tensor in tensors:
                started = time.perf_counter()
                detector.infer(tensor)
                times.append((time.perf_counter() - started) * 1000)
            medians[round_index, column] = np.median(times)
    return medians


def paired_speedup(baseline_ms: np.ndarray, candidate_ms: np.ndarray) -> float:
    """Return the median over rounds of the baseline-to-candidate time ratio (each round under one load)."""
    return float(np.median(baseline_ms / candidate_ms))


def pick_agreement_conf(held: HeldBack) -> float:
    """Return the highest conf at which fp32 finds something on the held-back frames to agree with."""
    for conf in AGREEMENT_CONFS:
        if sum(len(d) for d in held.detections(held.reference_outputs, conf)):
            return conf
    return AGREEMENT_CONFS[-1]


def box_weighted_map50(predictions: list[Detections], references: list[Detections]) -> float:
    """Return AP50 averaged over classes weighted by their reference boxes (NaN without references).

    On a dozen frames a class seen once would otherwise weigh as much as one seen fifty times,
    and a single missed box would swing the mean by 1/classes.
    """
    result = mean_average_precision(predictions, references)
    if not len(result.classes):
        return float("nan")
    reference_classes = np.concatenate([r.class_ids for r in references])
    counts = np.array([(reference_classes == c).sum() for c in result.classes], np.float64)
    return float((result.ap[:, 0] * counts).sum() / counts.sum())


def agreement(candidate_outputs: list[np.ndarray], held: HeldBack) -> float:
    """Return the box-weighted mAP50 of a candidate's detections with fp32's as ground truth.

    Both sides are cut at the same conf, as a viewer sees them: a recipe that lowers scores loses
    the boxes near the threshold, which a lenient mAP (predictions down to a lower conf) would hide.
    1.0 when neither finds anything.
    """
    references = held.detections(held.reference_outputs, held.conf)
    predictions = held.detections(candidate_outputs, held.conf)
    score = box_weighted_map50(predictions, references)
    if np.isnan(score):
        return 0.0 if any(len(p) for p in predictions) else 1.0
    return score


def choose(rows: list[TuneRow], min_agreement: float) -> tuple[TuneRow, bool]:
    """Return the fastest row that agrees enough, or else the most accurate one, and whether it qualified.

    Speed is the speedup over fp32 timed alongside each recipe, so load that comes and goes on a
    shared CPU cancels out. Rows within SAME_SPEED of the fastest count as equally fast, and the
    most accurate of those is kept.
    """
    measured = [r for r in rows if r.error is None]
    if not measured:
        raise RuntimeError("no int8 recipe could be built: " + "; ".join(f"{r.recipe}: {r.error}" for r in rows))
    qualified = [r for r in measured if r.agreement >= min_agreement]
    if not qualified:
        return max(measured, key=lambda r: (r.agreement, r.speedup)), False
    fastest = max(r.speedup for r in qualified)
    as_fast = [r for r in qualified if r.speedup >= fastest / (1 + SAME_SPEED)]
    return max(as_fast, key=lambda r: (r.agreement, r.speedup)), True


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


def write_atomically(source: Path, target: Path) -> None:
    """Copy source over target so that readers never see a half-written file."""
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


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
