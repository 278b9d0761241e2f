"""Keep stable ids on detections and move boxes between detector frames with optical flow."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from server.vision.processing import Detections, iou_matrix

logger = logging.getLogger(__name__)

FLOW_WIDTH = 320  # px; flow runs on a gray frame downscaled to this width
MIN_FLOW_POINTS = 4  # fewer tracked corners than this and the box follows its velocity alone
FLOW_WEIGHT = 0.8  # trust in the flow measurement against the constant-velocity prediction
VELOCITY_SMOOTHING = 0.5  # weight of the newest velocity measurement
MAX_CORNERS = 24  # per box
MAX_SCALE_STEP = 0.1  # per frame: a box grows or shrinks at most 10 % between two frames
LK_PARAMS = dict(
    winSize=(15, 15),
    maxLevel=2,
    criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03),
)


@dataclass
class Track:
    """One object followed across frames: its box in frame pixels and per-frame velocity."""

    track_id: int
    box: np.ndarray  # xyxy, float64
    score: float
    class_id: int
    velocity: np.ndarray  # (dx, dy) of the centre per frame
    frames_since_detection: int = 0
    detected_center: np.ndarray | None = None
    moving: bool = False  # velocity has been measured at least once
    confirmed: bool = True  # matched on the latest detector frame; unconfirmed tracks coast hidden

    def center(self) -> np.ndarray:
        """Return the box centre (x, y)."""
        return (self.box[:2] + self.box[2:]) / 2


def greedy_match(similarity: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pair rows with columns, highest similarity first, each at most once, above threshold."""
    rows, cols = np.nonzero(similarity > threshold)
    order = np.argsort(-similarity[rows, cols], kind="stable")
    used_rows, used_cols, pairs = set(), set(), []
    for row, col in zip(rows[order], cols[order]):
        if row not in used_rows and col not in used_cols:
            used_rows.add(row)
            used_cols.add(col)
            pairs.append((int(row), int(col)))
    return pairs


def to_small_gray(frame: np.ndarray, width: int = FLOW_WIDTH) -> tuple[np.ndarray, float]:
    """Return the frame as gray, downscaled to at most `width` px wide, and the scale applied."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    scale = min(1.0, width / gray.shape[1])
    if scale < 1.0:
        size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray, scale


def corners_in_box(gray: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Find good corners inside the inner part of a box (small-frame pixels); return Nx2 float32."""
    height, width = gray.shape
    # Shrinking the box keeps background corners (which do not move with the object) out.
    inset = (box[2:] - box[:2]) * 0.1
    x1, y1 = np.floor(np.maximum(box[:2] + inset, 0)).astype(int)
    x2, y2 = np.ceil(np.minimum(box[2:] - inset, (width, height))).astype(int)
    if x2 - x1 < 3 or y2 - y1 < 3:
        return np.zeros((0, 2), np.float32)
    corners = cv2.goodFeaturesToTrack(
        gray[y1:y2, x1:x2], maxCorners=MAX_CORNERS, qualityLevel=0.01, minDistance=3, blockSize=3
    )
    if corners is None:
        return np.zeros((0, 2), np.float32)
    return corners.reshape(-1, 2) + np.float32((x1, y1))


def flow_motion(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, float]:
    """Return the median shift and the median scale change between matched points."""
    shift = np.median(new - old, axis=0)
    if len(old) < 3:
        return shift, 1.0
    old_spread = np.linalg.norm(old - np.median(old, axis=0), axis=1)
    new_spread = np.linalg.norm(new - np.median(new, axis=0), axis=1)
    valid = old_spread > 1.0
    if valid.sum() < 3:
        return shift, 1.0
    scale = float(np.median(new_spread[valid] / old_spread[valid]))
    return shift, float(np.clip(scale, 1 - MAX_SCALE_STEP, 1 + MAX_SCALE_STEP))


def scale_box(box: np.ndarray, factor: float) -> np.ndarray:
    """Grow or shrink an xyxy box about its centre."""
    center, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * factor
    return np.concatenate([center - half, center + half])


class Tracker:
    """Associate detections to tracks by IoU and carry the boxes across frames without detections."""

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_age: int = 30,
        flow_width: int = FLOW_WIDTH,
    ):
        self.iou_threshold = iou_threshold
        self.max_age = max_age  # frames without a matching detection before a track is dropped
        self.flow_width = flow_width
        self.reset()

    def reset(self) -> None:
        """Forget every track and the previous frame; ids start again at 1."""
        self.tracks: list[Track] = []
        self._next_id = 1
        self._previous_gray: np.ndarray | None = None
        self._previous_scale = 1.0

    def update(self, frame: np.ndarray, detections: Detections) -> Detections:
        """Match a detector frame's detections to the tracks and return them with track ids."""
        self._predict()
        boxes = detections.boxes.astype(np.float64)
        track_ids = np.zeros(len(detections), np.int64)
        for track in self.tracks:
            track.confirmed = False
        for track_index, detection_index in self._associate(boxes, detections.class_ids):
            track = self.tracks[track_index]
            self._correct(track, boxes[detection_index], float(detections.scores[detection_index]))
            track_ids[detection_index] = track.track_id
        for detection_index in np.flatnonzero(track_ids == 0):
            track_ids[detection_index] = self._birth(boxes[detection_index], detections, detection_index).track_id
        self.tracks = [t for t in self.tracks if t.frames_since_detection <= self.max_age]
        self._remember(frame)
        return Detections(detections.boxes, detections.scores, detections.class_ids, track_ids)

    def _predict(self) -> None:
        """Move every track one frame along its velocity (tracks were last placed on the previous frame)."""
        for track in self.tracks:
            track.box = track.box + np.tile(track.velocity, 2)
            track.frames_since_detection += 1

    def _associate(self, boxes: np.ndarray, class_ids: np.ndarray) -> list[tuple[int, int]]:
        """Pair tracks with detections of the same class by IoU, best overlaps first."""
        similarity = iou_matrix(np.array([t.box for t in self.tracks]).reshape(-1, 4), boxes)
        same_class = np.array([t.class_id for t in self.tracks])[:, None] == class_ids[None, :]
        return greedy_match(np.where(same_class, similarity, 0.0), self.iou_threshold)

    def propagate(self, frame: np.ndarray) -> Detections:
        """Move every track onto a frame the detector skipped and return the confirmed ones."""
        gray, scale = to_small_gray(frame, self.flow_width)
        moves = self._flow_moves(gray, scale)
        for track in self.tracks:
            shift, factor = moves.get(track.track_id, (None, 1.0))
            step = self._blend(track, shift)
            track.box = scale_box(track.box + np.tile(step, 2), factor)
            track.frames_since_detection += 1
        self.tracks = [t for t in self.tracks if t.frames_since_detection <= self.max_age]
        self._previous_gray, self._previous_scale = gray, scale
        return self._visible(frame.shape[:2])

    @staticmethod
    def _blend(track: Track, shift: np.ndarray | None) -> np.ndarray:
        """Combine a flow shift with the constant-velocity prediction; return this frame's step."""
        if shift is None:
            return track.velocity
        if not track.moving:
            # No velocity measured yet: the flow is all we know, and it seeds the motion model.
            track.velocity, track.moving = shift, True
            return shift
        return FLOW_WEIGHT * shift + (1 - FLOW_WEIGHT) * track.velocity

    def _birth(self, box: np.ndarray, detections: Detections, index: int) -> Track:
        track = Track(
            track_id=self._next_id,
            box=box.copy(),
            score=float(detections.scores[index]),
            class_id=int(detections.class_ids[index]),
            velocity=np.zeros(2),
            detected_center=(box[:2] + box[2:]) / 2,
        )
        self._next_id += 1
        self.tracks.append(track)
        return track

    def _correct(self, track: Track, box: np.ndarray, score: float) -> None:
        """Snap a track to its new detection and refresh its velocity from the detected centres."""
        center = (box[:2] + box[2:]) / 2
        if track.detected_center is not None and track.frames_since_detection > 0:
            measured = (center - track.detected_center) / track.frames_since_detection
            if track.moving:
                measured = (1 - VELOCITY_SMOOTHING) * track.velocity + VELOCITY_SMOOTHING * measured
            track.velocity, track.moving = measured, True
        track.box, track.score, track.detected_center = box.copy(), score, center
        track.frames_since_detection, track.confirmed = 0, True

    def _remember(self, frame: np.ndarray) -> None:
        self._previous_gray, self._previous_scale = to_small_gray(frame, self.flow_width)

    def _flow_moves(self, gray: np.ndarray, scale: float) -> dict[int, tuple[np.ndarray, float]]:
        """Return, per visible track id, its flow shift in frame pixels and its scale change."""
        previous = self._previous_gray
        if previous is None or previous.shape != gray.shape:
            return {}
        points, owners = [], []
        for track in self._live_tracks():
            corners = corners_in_box(previous, track.box * self._previous_scale)
            points.append(corners)
            owners.extend([track.track_id] * len(corners))
        if not owners:
            return {}
        old = np.concatenate(points).reshape(-1, 1, 2).astype(np.float32)
        new, status, _ = cv2.calcOpticalFlowPyrLK(previous, gray, old, None, **LK_PARAMS)
        # Checking each point by flowing it back drops corners that slid along an edge.
        back, back_status, _ = cv2.calcOpticalFlowPyrLK(gray, previous, new, None, **LK_PARAMS)
        error = np.linalg.norm((back - old).reshape(-1, 2), axis=1)
        good = (status.ravel() == 1) & (back_status.ravel() == 1) & (error < 1.0)
        owners_array = np.array(owners)
        moves = {}
        for track_id in set(owners):
            chosen = good & (owners_array == track_id)
            if chosen.sum() >= MIN_FLOW_POINTS:
                shift, factor = flow_motion(old[chosen, 0] / scale, new[chosen, 0] / scale)
                moves[track_id] = (shift, factor)
        return moves

    def _live_tracks(self) -> list[Track]:
        """Return the tracks the latest detector frame confirmed."""
        return [t for t in self.tracks if t.confirmed]

    def _visible(self, frame_hw: tuple[int, int]) -> Detections:
        """Return the confirmed tracks as detections, clipped to the frame."""
        tracks = self._live_tracks()
        if not tracks:
            return Detections(track_ids=np.zeros((0,), np.int64))
        height, width = frame_hw
        boxes = np.array([t.box for t in tracks], np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return Detections(
            boxes,
            np.array([t.score for t in tracks], np.float32),
            np.array([t.class_id for t in tracks], np.int64),
            np.array([t.track_id for t in tracks], np.int64),
        )
