"""Boxes on the frames between two keyframes, interpolated from the tracked detections on both (pure functions).

A track on both keyframes moves linearly in centre and size from its box on the earlier one to its box on the
later one. A track on one keyframe only is an object that appeared or left somewhere between the two, or a box
the detector found on one keyframe and not the other: it is shown, at that keyframe's box, on the frames nearer
to the keyframe that saw it. An arrival's or departure's true frame is equally likely anywhere in the gap, so the
midpoint halves the worst case either way: no box pops in a whole interval late or hangs a whole interval after the
object left. On the midpoint itself (detect-every 2, 4, ...) neither keyframe is nearer and the score decides:
such a box is shown when it is confident (>= CONFIDENT_ALONE). Measured on every-frame detection of real footage,
a confident one is still there on the midpoint about two times in three, one near the confidence threshold less
than half of the time (docs/keyframes.md).
Class and score always come from a keyframe: the nearer one for a track on both.
"""

from __future__ import annotations

import numpy as np

from server.vision.processing import Detections

CONFIDENT_ALONE = 0.45  # a box on one keyframe only this sure is shown on the gap's midpoint (docs/keyframes.md)


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
    # Sets, not np.intersect1d: its first call imports numpy.ma (about 40 M instructions, a hiccup at the first
    # interpolated frame of a stream), and a frame holds a handful of tracks.
    shared = sorted(set(before_ids[before_ids >= 0].tolist()) & set(after_ids[after_ids >= 0].tolist()))
    first = {int(track): i for i, track in enumerate(before_ids)}
    last = {int(track): i for i, track in enumerate(after_ids)}
    pairs = [(first[track], last[track]) for track in shared]
    boxes = lerp_boxes(before.boxes[[a for a, _ in pairs]].astype(np.float64).reshape(-1, 4),
                       after.boxes[[b for _, b in pairs]].astype(np.float64).reshape(-1, 4), t)
    nearer, nearer_rows = (before, [a for a, _ in pairs]) if t < 0.5 else (after, [b for _, b in pairs])
    # The other tracks: each keyframe's that the other one does not have, where they are shown.
    midpoint = abs(t - 0.5) < 1e-9
    alone = [(keyframe, i) for keyframe, ids, near in ((before, before_ids, t < 0.5), (after, after_ids, t > 0.5))
             for i, track in enumerate(ids)
             if (track < 0 or int(track) not in shared)
             and (near or (midpoint and keyframe.scores[i] >= CONFIDENT_ALONE))]
    parts = [(nearer, nearer_rows, boxes)] + [(keyframe, [i], keyframe.boxes[[i]]) for keyframe, i in alone]
    return Detections(
        np.concatenate([box.astype(np.float64).reshape(-1, 4) for _, _, box in parts]).astype(np.float32),
        np.concatenate([keyframe.scores[rows] for keyframe, rows, _ in parts]).astype(np.float32),
        np.concatenate([keyframe.class_ids[rows] for keyframe, rows, _ in parts]).astype(np.int64),
        None if before.track_ids is None or after.track_ids is None
        else np.concatenate([keyframe.track_ids[rows] for keyframe, rows, _ in parts]).astype(np.int64),
    )


def between(before: Detections, before_index: int, after: Detections, after_index: int,
            indices: list[int]) -> list[Detections]:
    """The boxes of each frame in indices (all strictly between the two keyframes)."""
    return [interpolate(before, after, fraction(index, before_index, after_index)) for index in indices]
