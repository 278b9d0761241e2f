"""Compare an NCNN engine with ONNX Runtime on the same tensors: raw outputs, detections after NMS, fp16 agreement."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from server.models.tuning import judging
from server.models.ncnn import ncnn_model_for
from server.vision import processing
from server.vision.detector import Detector
from server.vision.engines.ncnn_engine import NcnnEngine

RAW_TOLERANCE = 1e-3  # relative: |ncnn - ort| <= 1e-3 * (|ort| + 1) per value (box pixels, class probabilities)
FP16_BOX_PX = 1.0
FP16_AGREEMENT = 0.98
CONF, IOU = 0.25, 0.7


@dataclass
class Comparison:
    worst_relative: float = 0.0  # of fp32 raw outputs
    detections: int = 0  # ONNX Runtime's boxes after NMS at CONF, summed over frames and sizes
    nms_compared: int = 0  # (frame, size, conf) cases with boxes whose detections after NMS were compared
    nms_tied: int = 0  # cases left out: candidates with tied scores, whose NMS order is arbitrary (random weights)
    fp16_worst_px: float = 0.0  # the largest corner move of an fp16 box matched to its fp32 box
    fp16_agreement: dict[int, float] = field(default_factory=dict)  # per size, as the int8 verdict judges


def engines_of(onnx_path: Path, work: Path, threads: int = 2) -> tuple[Detector, Detector, Detector]:
    """ONNX Runtime fp32, NCNN fp32 and NCNN fp16 detectors of a copy of onnx_path (its NCNN files go into work)."""
    copy = work / onnx_path.name
    shutil.copyfile(onnx_path, copy)
    build = ncnn_model_for(copy)
    assert build.files is not None, build.reason
    return (Detector(copy, threads), Detector(NcnnEngine(build.files, threads, "fp32")),
            Detector(NcnnEngine(build.files, threads, "fp16")))


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    return float((np.abs(ours - reference) / (np.abs(reference) + 1)).max())


def same_detections(ours: processing.Detections, theirs: processing.Detections, what: str) -> None:
    assert np.array_equal(ours.class_ids, theirs.class_ids), f"classes differ: {what}"
    np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=0.05, err_msg=f"boxes differ: {what}")
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-3, err_msg=f"scores differ: {what}")


def matched_corner_moves(ours: processing.Detections, theirs: processing.Detections) -> np.ndarray:
    """For each reference box, how far the corners of the same-class box that overlaps it most moved (px)."""
    moves = []
    for box, class_id in zip(theirs.boxes, theirs.class_ids):
        same = ours.boxes[ours.class_ids == class_id]
        if len(same):
            best = same[processing.iou_matrix([box], same)[0].argmax()]
            if processing.iou_matrix([box], [best])[0, 0] > 0.5:
                moves.append(np.abs(best - box).max())
    return np.asarray(moves)


def busy_conf(output: np.ndarray, candidates: int = 200) -> float:
    """A confidence that lets about `candidates` anchors into NMS (random-weight models score ~1e-4).

    It sits in the widest gap between neighbouring best-class scores around that rank, so values a rounding apart
    fall on the same side of it in both engines.
    """
    best = np.sort(output[0, 4:].max(axis=0))[::-1]
    ranks = best[candidates // 2: min(2 * candidates, best.size)]
    if len(ranks) < 2:
        return float(best[-1]) / 2
    gap = int(np.argmax(ranks[:-1] - ranks[1:]))
    return float(ranks[gap] + ranks[gap + 1]) / 2


def tied(output: np.ndarray, conf: float, difference: float) -> bool:
    """Whether two of the candidates above conf score closer than the engines differ, so NMS may keep either.

    At a busy conf (hundreds of candidates) trained models tie now and then too; at conf 0.25 they do not.

    Random-weight models give hundreds of anchors the very same score; greedy NMS then starts from whichever
    rounding puts first, and the boxes kept are another set altogether. Trained models have no such ties.
    """
    scores = np.sort(output[0, 4:].max(axis=0))
    candidates = scores[scores > conf]
    return len(candidates) > 1 and float(np.diff(candidates).min()) <= 2 * difference


def compare_engines(onnx_path: Path, frames: list[np.ndarray], sizes, work: Path) -> Comparison:
    """Run ONNX Runtime fp32 and NCNN fp32/fp16 on the frames at each size and assert they agree as promised."""
    reference, fp32, fp16 = engines_of(onnx_path, work)
    result = Comparison()
    for imgsz in sizes:
        for frame in frames:
            frame_hw = frame.shape[:2]
            tensor, box = processing.preprocess(frame, reference.input_hw(frame_hw, imgsz))
            expected, ours, half = reference.infer(tensor), fp32.infer(tensor), fp16.infer(tensor)
            assert ours.shape == expected.shape == half.shape
            result.worst_relative = max(result.worst_relative, relative_difference(ours, expected))
            score_difference = float(np.abs(ours[0, 4:] - expected[0, 4:]).max())
            for conf in (CONF, busy_conf(expected)):  # a busy conf: untrained models are compared on boxes too
                theirs = processing.postprocess(expected, box, frame_hw, conf, IOU)
                if tied(expected, conf, score_difference):
                    result.nms_tied += 1
                    continue
                result.nms_compared += int(len(theirs) > 0)
                same_detections(processing.postprocess(ours, box, frame_hw, conf, IOU), theirs,
                                f"{onnx_path.name} at {imgsz}, conf {conf:.3g}")
                result.detections += len(theirs) if conf == CONF else 0
                moves = matched_corner_moves(processing.postprocess(half, box, frame_hw, conf, IOU), theirs)
                result.fp16_worst_px = max([result.fp16_worst_px, *moves.tolist()])
        held = judging.collect_held_back(reference, frames, imgsz)
        result.fp16_agreement[imgsz] = judging.agreement([fp16.infer(t) for t in held.tensors], held)
    assert result.worst_relative <= RAW_TOLERANCE, f"raw outputs differ by {result.worst_relative:.2e} (relative)"
    assert result.fp16_worst_px <= FP16_BOX_PX, f"fp16 boxes moved {result.fp16_worst_px:.2f} px"
    assert min(result.fp16_agreement.values()) >= FP16_AGREEMENT, f"fp16 agreement {result.fp16_agreement}"
    return result
