"""Boxes on the frames between two keyframes, interpolated from the tracked detections on both (pure functions).

A track on both keyframes moves linearly in centre and size from its box on the earlier one to its box on the
later one. A track on one keyframe only is an object that appeared or left somewhere between the two: it is
shown on the half of the frames nearer to the keyframe that saw it, at that keyframe's box. Its true first (or
last) frame is equally likely anywhere in the gap, so the midpoint halves the worst case either way: a box
neither pops in a whole interval late nor hangs a whole interval after the object left. Class and score always
come from a keyframe: the nearer one for a track on both.
"""

from __future__ import annotations

import numpy as np

from server.vision.processing import Detections


def fraction(index: int, before: int, after: int) -> float:
    """Where frame `index` lies between keyframes `before` (0.0) and `after` (1.0)."""
    return (index - before) / (after - before)


def lerp_boxes(first: np.ndarray, last: np.ndarray, t: float) -> np.ndarray:
    """Move xyxy boxes linearly in centre and size from first (t=0) to last (t=1)."""
    center = (1 - t) * (first[:, :2] + first[:, 2:]) / 2 + t * (last[:, :2] + last[:, 2:]) / 2
    size = (1 - t) * (first[:, 2:] - first[:, :2]) + t * (last[:, 2:] - last[:, :2])
    return np.concatenate([center - size / 2, center + size / 2], axis=1)


def _ids(detections: Detections) -> np.ndarray:
    if detections.track_ids is None:  # untracked boxes cannot be paired: each is shown as on one keyframe
        return np.full(len(detections), -1, np.int64)
    return detections.track_ids


def interpolate(before: Detections, after: Detections, t: float) -> Detections:
    """The boxes a frame at fraction t (0 < t < 1) between two keyframes shows."""
    before_ids, after_ids = _ids(before), _ids(after)
    shared = np.intersect1d(before_ids[before_ids >= 0], after_ids[after_ids >= 0])
    first = {int(track): i for i, track in enumerate(before_ids)}
    last = {int(track): i for i, track in enumerate(after_ids)}
    pairs = [(first[int(track)], last[int(track)]) for track in shared]
    boxes = lerp_boxes(before.boxes[[a for a, _ in pairs]].astype(np.float64).reshape(-1, 4),
                       after.boxes[[b for _, b in pairs]].astype(np.float64).reshape(-1, 4), t)
    nearer, nearer_rows = (before, [a for a, _ in pairs]) if t < 0.5 else (after, [b for _, b in pairs])
    # The other tracks: those of the nearer keyframe that the other one does not have.
    alone = [i for i, track in enumerate(_ids(nearer)) if track < 0 or track not in shared]
    rows = [*nearer_rows, *alone]
    return Detections(
        np.concatenate([boxes, nearer.boxes[alone].astype(np.float64).reshape(-1, 4)]).astype(np.float32),
        nearer.scores[rows],
        nearer.class_ids[rows],
        None if nearer.track_ids is None else nearer.track_ids[rows],
    )


def between(before: Detections, before_index: int, after: Detections, after_index: int,
            indices: list[int]) -> list[Detections]:
    """The boxes of each frame in indices (all strictly between the two keyframes)."""
    return [interpolate(before, after, fraction(index, before_index, after_index)) for index in indices]
