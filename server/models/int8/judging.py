"""Judging int8 candidates against fp32: interleaved timing, agreement on held-back frames, and the choice."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from server.vision import processing
from server.vision.detector import Detector
from server.vision.metrics import mean_average_precision
from server.vision.processing import Detections

logger = logging.getLogger(__name__)



TIMED_FRAMES = 8  # held-back frames each model is timed on, per round
TIMING_ROUNDS = 3  # turns each model takes over the held-back frames when timing
AGREEMENT_CONFS = (0.25, 0.1, 0.05, 0.01)  # the highest that leaves fp32 boxes to compare with is used
AGREEMENT_IOU = 0.7  # NMS IoU while measuring agreement (the server's default)
SAME_SPEED = 0.05  # recipes this close to the fastest are told apart by agreement instead


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
