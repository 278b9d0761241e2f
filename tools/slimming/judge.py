"""Agreement of a slimmed model with its teacher on held-back frames, as the server's int8 verdict judges it.

Both models run as the server runs them (their ONNX on ONNX Runtime, server.vision.detector); the metric is
server.models.tuning.judging's: its conf and method are chosen as collect_held_back chooses them, then every held-back
frame counts (frames of different sizes are judged per size and weighted by their number).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from server.models.tuning import judging
from server.vision import processing
from server.vision.detector import Detector


def held_back_set(teacher: Detector, frames: list[np.ndarray], imgsz: int) -> judging.HeldBack:
    """Every frame (all one size) with the teacher's outputs, judged at the conf and by the method the server picks."""
    probe = judging.collect_held_back(teacher, frames, imgsz)
    frame_hw = frames[0].shape[:2]
    input_hw = teacher.input_hw(frame_hw, imgsz)
    prepared = [processing.preprocess(frame, input_hw) for frame in frames]
    tensors = [tensor for tensor, _ in prepared]
    held = judging.HeldBack(frame_hw, tensors, [box for _, box in prepared], [teacher.infer(t) for t in tensors])
    held.conf, held.method = probe.conf, probe.method
    return held


def agreement(teacher_onnx: Path, student_onnx: Path, frames: list[np.ndarray], imgsz: int,
              threads: int = 2) -> dict:  # fmt: skip
    """Return the student's agreement with the teacher on the frames, with how it was judged."""
    teacher, student = Detector(teacher_onnx, threads), Detector(student_onnx, threads)
    by_size: dict[tuple[int, int], list[np.ndarray]] = defaultdict(list)
    for frame in frames:
        by_size[frame.shape[:2]].append(frame)
    scores, weights, methods, boxes = [], [], set(), 0
    for group in by_size.values():
        held = held_back_set(teacher, group, imgsz)
        scores.append(judging.agreement([student.infer(t) for t in held.tensors], held))
        weights.append(len(group))
        methods.add(f"{held.method} at conf {held.conf}")
        boxes += held.reference_boxes()
    return {"agreement": round(float(np.average(scores, weights=weights)), 4), "frames": len(frames),
            "teacher_boxes": boxes, "judged_by": sorted(methods), "imgsz": imgsz}  # fmt: skip
