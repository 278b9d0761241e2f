"""Pure detection metrics: match detections to ground truth and compute mAP50 and mAP50-95.

Follows ultralytics' val definitions so numbers are comparable: detections in descending
confidence each claim the best-overlapping unclaimed target of their class, per IoU threshold
(0.50:0.05:0.95); AP per class is integrated over 101 recall points of the precision envelope;
mAP is the mean over the classes that have ground truth. Anything with .boxes (xyxy) and
.class_ids (and .scores for predictions), such as processing.Detections, can be scored, so
detections of one model can serve as the ground truth for another ("agreement").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np

from server.vision.processing import iou_matrix

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
INTERPOLATIONS = ("ultralytics", "coco")


class Boxes(Protocol):
    """Boxes in one image: N x 4 xyxy and their N class ids."""

    boxes: np.ndarray
    class_ids: np.ndarray


class ScoredBoxes(Boxes, Protocol):
    """Predicted boxes in one image, with their confidences."""

    scores: np.ndarray


@dataclass
class MapResult:
    """mAP over IoU 0.50 and 0.50:0.95, and AP per class (rows of IOU_THRESHOLDS columns)."""

    map50: float
    map50_95: float
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ap: np.ndarray = field(default_factory=lambda: np.zeros((0, len(IOU_THRESHOLDS))))
    images: int = 0
    targets: int = 0
    predictions: int = 0


def match_detections(
    predicted: ScoredBoxes, truth: Boxes, thresholds: np.ndarray = IOU_THRESHOLDS
) -> np.ndarray:
    """Return an N x T bool matrix: is each prediction a true positive at each IoU threshold.

    Rows follow the predictions' own order; they are matched in descending confidence.
    """
    pred_classes = np.asarray(predicted.class_ids).reshape(-1)
    true_classes = np.asarray(truth.class_ids).reshape(-1)
    correct = np.zeros((len(pred_classes), len(thresholds)), bool)
    if len(pred_classes) == 0 or len(true_classes) == 0:
        return correct
    # targets x predictions, zero where the classes differ
    iou = iou_matrix(truth.boxes, predicted.boxes) * (true_classes[:, None] == pred_classes[None, :])
    claimed = np.zeros((len(true_classes), len(thresholds)), bool)
    columns = np.arange(len(thresholds))
    for j in np.argsort(-np.asarray(predicted.scores), kind="stable"):
        if iou[:, j].max() < thresholds.min():
            continue
        available = np.where(claimed, 0.0, iou[:, j, None])
        best = available.argmax(axis=0)
        correct[j] = available[best, columns] >= thresholds
        claimed[best, columns] |= correct[j]
    return correct


def average_precision(recall: np.ndarray, precision: np.ndarray, interpolation: str = "coco") -> float:
    """Return the area under a precision-recall curve sampled at 101 recall points of its envelope.

    "coco" averages the envelope at the 101 points (pycocotools: a perfect curve gives 1.0);
    "ultralytics" integrates them with the trapezoid rule after ultralytics' sentinels, which
    gives 0.995 for a perfect curve.
    """
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if interpolation == "ultralytics":
        last = recall[-1] if len(recall) else 1.0
        mrec = np.concatenate(([0.0], recall, [last], [1.0]))
        mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
        envelope = np.flip(np.maximum.accumulate(np.flip(mpre)))
        return float(np.trapezoid(np.interp(RECALL_POINTS, mrec, envelope), RECALL_POINTS))
    if interpolation != "coco":
        raise ValueError(f"unknown interpolation {interpolation!r}, expected one of {INTERPOLATIONS}")
    if len(recall) == 0:
        return 0.0
    envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(index < len(envelope), envelope[np.minimum(index, len(envelope) - 1)], 0.0)
    return float(sampled.mean())


def ap_per_class(
    true_positives: np.ndarray,
    scores: np.ndarray,
    pred_classes: np.ndarray,
    true_classes: np.ndarray,
    interpolation: str = "coco",
) -> tuple[np.ndarray, np.ndarray]:
    """Return the classes that have ground truth and their AP at each IoU threshold (C x T)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    true_positives, pred_classes = np.asarray(true_positives)[order], np.asarray(pred_classes)[order]
    classes, counts = np.unique(np.asarray(true_classes), return_counts=True)
    ap = np.zeros((len(classes), true_positives.shape[1] if true_positives.ndim == 2 else len(IOU_THRESHOLDS)))
    for row, (cls, count) in enumerate(zip(classes, counts)):
        hits = true_positives[pred_classes == cls]
        if len(hits) == 0:
            continue
        tp_cumulative = hits.cumsum(axis=0)
        fp_cumulative = (1 - hits).cumsum(axis=0)
        recall = tp_cumulative / count
        precision = tp_cumulative / (tp_cumulative + fp_cumulative)
        ap[row] = [average_precision(recall[:, t], precision[:, t], interpolation) for t in range(ap.shape[1])]
    return classes.astype(np.int64), ap


def mean_average_precision(
    predictions: Iterable[ScoredBoxes], truths: Iterable[Boxes], interpolation: str = "coco"
) -> MapResult:
    """Score per-image predictions against per-image ground truth (same order); NaN mAP when there is no truth."""
    hits, scores, pred_classes, true_classes = [], [], [], []
    images = 0
    for predicted, truth in zip(predictions, truths, strict=True):
        images += 1
        hits.append(match_detections(predicted, truth))
        scores.append(np.asarray(predicted.scores, np.float64).reshape(-1))
        pred_classes.append(np.asarray(predicted.class_ids, np.int64).reshape(-1))
        true_classes.append(np.asarray(truth.class_ids, np.int64).reshape(-1))
    if images == 0:
        return MapResult(float("nan"), float("nan"))
    pred_classes_all, true_classes_all = np.concatenate(pred_classes), np.concatenate(true_classes)
    classes, ap = ap_per_class(
        np.concatenate(hits), np.concatenate(scores), pred_classes_all, true_classes_all, interpolation
    )
    # mAP is undefined without ground truth (ultralytics reports 0.0); callers decide what that means.
    map50 = float(ap[:, 0].mean()) if len(classes) else float("nan")
    map50_95 = float(ap.mean()) if len(classes) else float("nan")
    return MapResult(map50, map50_95, classes, ap, images, len(true_classes_all), len(pred_classes_all))


def map50(predictions: Iterable[ScoredBoxes], truths: Iterable[Boxes], interpolation: str = "coco") -> float:
    """Return mAP at IoU 0.5 of per-image predictions against per-image truth; NaN when the truth is empty."""
    return mean_average_precision(predictions, truths, interpolation).map50
