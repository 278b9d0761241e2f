"""Judging int8 candidates against fp32: interleaved timing, agreement on held-back frames, and the choice.

Agreement is the box-weighted mAP50 of a candidate's boxes with fp32's boxes as ground truth, on held-back frames
that give fp32 at least MIN_REFERENCE_BOXES boxes: frames are added until that many are found at the highest of
AGREEMENT_CONFS that reaches it. A model and video where fp32 finds fewer boxes even at the lowest conf fall back
to comparing the raw class-score maps ("score-map" in the report): over the anchors where either model scores at
least SCORE_MAP_FLOOR (every anchor of a frame where none does), 1 - sum|int8 - fp32| / sum max(int8, fp32), so 1.0
means identical scores and 0.9 means 10 % of the score mass moved. A handful of boxes cannot tell recipes apart;
the score maps always can.

Timing runs fp32 and every candidate in the same rounds, a block of frames each, the order reversed every other
round, so load that comes and goes hits all of them alike. A row's milliseconds are its median over rounds; its
speed-up is fp32's milliseconds over its own, as the table shows them; its noise is half the spread of its per-round
speed-ups. One recipe counts as faster than another only by more than their noise; otherwise the more accurate wins.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from server.vision import processing
from server.vision.detector import Detector
from server.vision.metrics import mean_average_precision
from server.vision.processing import Detections
from server.vision.turns import InferenceTurns

logger = logging.getLogger(__name__)

TIMED_FRAMES = 8  # held-back frames each model is timed on, per round
TIMING_ROUNDS = 5  # turns each model takes over the timed frames
TURN_FRAMES = 4  # timed frames in a row while a stream waits: its pause stays short (4 inferences)
MIN_REFERENCE_BOXES = 50  # fp32 boxes agreement must rest on, else the score maps are compared
MIN_HELD_BACK_FRAMES = 8
AGREEMENT_CONFS = (0.25, 0.1, 0.05)  # the highest that gives fp32 enough boxes is used
AGREEMENT_IOU = 0.7  # NMS IoU while measuring agreement (the server's default)
SCORE_MAP_FLOOR = 0.01  # anchors where neither model scores this much are left out of the score-map comparison
MAP50, SCORE_MAP = "map50", "score-map"


@dataclass
class TuneRow:
    """What one recipe measured: ms and speed-up from the shared timing rounds, agreement on held-back frames."""

    recipe: str
    ms: float | None
    speedup: float | None
    agreement: float | None
    chosen: bool = False
    error: str | None = None
    settings: dict = field(default_factory=dict)
    noise: float | None = None  # half the spread of the per-round speed-ups
    # What runs the row: an int8 recipe is ONNX Runtime int8; the auto engine choice adds rows of other engines.
    engine: str = "onnxruntime"
    precision: str = "int8"
    threads: int | None = None
    picked: bool = False  # what engine auto runs (server.models.choice.pick), as chosen is the int8 recipe kept
    why: str = ""

    @property
    def is_recipe(self) -> bool:
        return self.engine == "onnxruntime" and self.precision == "int8"


@dataclass
class HeldBack:
    """Frames kept out of calibration, with fp32's outputs on them: what candidates are judged by."""

    frame_hw: tuple[int, int]
    tensors: list[np.ndarray]
    letterboxes: list[processing.Letterbox]
    reference_outputs: list[np.ndarray]
    conf: float = AGREEMENT_CONFS[0]
    method: str = MAP50

    def detections(self, outputs: list[np.ndarray], conf: float) -> list[Detections]:
        """Postprocess raw outputs of the held-back frames at one conf."""
        return [
            processing.postprocess(output, box, self.frame_hw, conf, AGREEMENT_IOU)
            for output, box in zip(outputs, self.letterboxes)
        ]

    def reference_boxes(self) -> int:
        """Count fp32's boxes at the agreement conf."""
        return sum(len(d) for d in self.detections(self.reference_outputs, self.conf))


def collect_held_back(reference: Detector, frames: list[np.ndarray], imgsz: int,
                      check: Callable[[], None] = lambda: None) -> HeldBack:
    """Run fp32 on held-back frames, one at a time, until it has MIN_REFERENCE_BOXES at the highest conf it can.

    Frames are taken evenly spread over the video first (every other one of the pool, then the rest), so a short
    collection still spans the video. When no conf reaches the count with every frame, the score maps are compared.
    """
    frame_hw = frames[0].shape[:2]
    input_hw = reference.input_hw(frame_hw, imgsz)
    order = list(range(0, len(frames), 2)) + list(range(1, len(frames), 2))
    tensors, boxes, outputs, counts = [], [], [], np.zeros(len(AGREEMENT_CONFS), np.int64)
    for index in order:
        check()
        tensor, box = processing.preprocess(frames[index], input_hw)
        output = reference.infer(tensor)
        tensors.append(tensor)
        boxes.append(box)
        outputs.append(output)
        counts += [len(processing.postprocess(output, box, frame_hw, conf, AGREEMENT_IOU)) for conf in AGREEMENT_CONFS]
        if counts[0] >= MIN_REFERENCE_BOXES and len(tensors) >= MIN_HELD_BACK_FRAMES:
            break
    held = HeldBack(frame_hw, tensors, boxes, outputs)
    enough = [conf for conf, count in zip(AGREEMENT_CONFS, counts) if count >= MIN_REFERENCE_BOXES]
    held.conf, held.method = (enough[0], MAP50) if enough else (AGREEMENT_CONFS[-1], SCORE_MAP)
    logger.info("held back %d frames: fp32 boxes %s at conf %s; agreement by %s", len(tensors),
                counts.tolist(), list(AGREEMENT_CONFS), held.method)
    return held


def time_models(detectors: list[Detector], tensors: list[np.ndarray], rounds: int = TIMING_ROUNDS,
                on_round: Callable[[int], None] = lambda done: None,
                turns: InferenceTurns | None = None) -> np.ndarray:
    """Return the median ms per inference of each detector (columns) in each round (rows).

    Models take turns a block of inputs at a time, so load that comes and goes hits all alike;
    not input by input, because a session's idle threads keep spinning for a while and would slow
    down the next session's run. With turns (a stream plays beside), a block is TURN_FRAMES inputs timed while the
    stream waits, its detect, draw and decode threads idle (server.vision.turns), then the stream gets its turn.
    """
    turns = turns or InferenceTurns()
    medians = np.zeros((rounds, len(detectors)))
    for round_index in range(rounds):
        on_round(round_index)
        order = range(len(detectors)) if round_index % 2 == 0 else reversed(range(len(detectors)))
        for column in order:
            times = []
            for first in range(0, len(tensors), TURN_FRAMES):
                with turns.timed():
                    if first == 0 or turns.playing():
                        detectors[column].infer(tensors[0])  # wake this session's threads
                    times += _timed(detectors[column], tensors[first:first + TURN_FRAMES])
                turns.rest()
            medians[round_index, column] = np.median(times)
    return medians


def _timed(detector: Detector, tensors: list[np.ndarray]) -> list[float]:
    """The ms of each inference, one after another."""
    times = []
    for tensor in tensors:
        started = time.perf_counter()
        detector.infer(tensor)
        times.append((time.perf_counter() - started) * 1000)
    return times


def timing_rows(medians: np.ndarray) -> tuple[float, list[tuple[float, float, float]]]:
    """Return fp32's ms (column 0) and, per candidate, (ms, speed-up from those shown ms, noise of the speed-up)."""
    fp32_ms = round(float(np.median(medians[:, 0])), 2)
    rows = []
    for column in range(1, medians.shape[1]):
        ms = round(float(np.median(medians[:, column])), 2)
        per_round = medians[:, 0] / medians[:, column]
        noise = float(per_round.max() - per_round.min()) / 2
        rows.append((ms, round(fp32_ms / ms, 3), round(noise, 3)))
    return fp32_ms, rows


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


def score_map_agreement(candidate_outputs: list[np.ndarray], reference_outputs: list[np.ndarray]) -> float:
    """Return 1 - the share of class-score mass that moved, over anchors where either model scores something."""
    moved = total = 0.0
    for candidate, reference in zip(candidate_outputs, reference_outputs):
        ours, theirs = candidate[0, 4:].astype(np.float64), reference[0, 4:].astype(np.float64)
        anchors = np.maximum(ours.max(axis=0), theirs.max(axis=0)) >= SCORE_MAP_FLOOR
        if anchors.any():  # else every anchor: a model that scores nothing highly is still compared
            ours, theirs = ours[:, anchors], theirs[:, anchors]
        moved += float(np.abs(ours - theirs).sum())
        total += float(np.maximum(ours, theirs).sum())
    return 1.0 if total == 0 else max(0.0, 1.0 - moved / total)


def agreement(candidate_outputs: list[np.ndarray], held: HeldBack) -> float:
    """Return how well a candidate agrees with fp32 on the held-back frames, by the held-back set's method.

    By mAP50, both sides are cut at the same conf, as a viewer sees them: a recipe that lowers scores loses
    the boxes near the threshold, which a lenient mAP (predictions down to a lower conf) would hide.
    """
    if held.method == SCORE_MAP:
        return score_map_agreement(candidate_outputs, held.reference_outputs)
    references = held.detections(held.reference_outputs, held.conf)
    predictions = held.detections(candidate_outputs, held.conf)
    score = box_weighted_map50(predictions, references)
    if np.isnan(score):
        return 0.0 if any(len(p) for p in predictions) else 1.0
    return score


def faster(one: TuneRow, other: TuneRow) -> bool:
    """Return whether one is faster than other by more than the noise of either measurement."""
    return one.speedup - other.speedup > max(one.noise or 0.0, other.noise or 0.0)


def choose(rows: list[TuneRow], min_agreement: float) -> tuple[TuneRow, bool]:
    """Return the fastest row that agrees enough, or else the most accurate one, and whether it qualified.

    Among the rows that agree enough, those the fastest does not beat by more than the noise count as equally
    fast, and the most accurate of them is kept.
    """
    measured = [r for r in rows if r.error is None]
    if not measured:
        raise RuntimeError("no int8 recipe could be built: " + "; ".join(f"{r.recipe}: {r.error}" for r in rows))
    qualified = [r for r in measured if r.agreement >= min_agreement]
    if not qualified:
        return max(measured, key=lambda r: (r.agreement, r.speedup)), False
    fastest = max(qualified, key=lambda r: r.speedup)
    as_fast = [r for r in qualified if not faster(fastest, r)]
    return max(as_fast, key=lambda r: (r.agreement, r.speedup)), True
