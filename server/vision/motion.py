"""A cheap motion measure on a small grey frame, and the motion-aware keyframe rule of `detect_every: auto`.

The measure: the frame as a MOTION_WIDTH px wide grey image (each cell the mean of about 10x10 pixels of a
640x480 frame, which averages sensor noise down by ~10x), compared cell by cell with the last keyframe's.
A cell changed when it differs by more than CHANGE_LEVEL grey levels; a frame changed when at least
MIN_CHANGED_CELLS cells did (one cell is a JPEG block's flicker).

The rule, in order: the first frame, a frame CEILING_S after the last keyframe (a still object is re-confirmed),
and a frame where something changed outside every track's box (something new moves where no track is) are
keyframes; a frame where things changed inside tracks' boxes is one every MOVING_EVERY frames; a frame where
nothing changed is "still": the network does not run and the boxes stay where they are.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np

from server.vision.tracker import to_small_gray

AUTO = "auto"
MOTION_WIDTH = 64  # px: 64x48 for 4:3
CHANGE_LEVEL = 12  # grey levels (of 255) a cell must move by: well above averaged sensor noise
MIN_CHANGED_CELLS = 2
MOVING_EVERY = 3  # frames between keyframes while tracked objects move (the interpolation buffer holds 2)
CEILING_S = 2.0  # a keyframe at least this often, even in a still scene
MARGIN_CELLS = 1  # a track's box grows by this many cells, plus GROWTH of its size per frame since the keyframe
GROWTH = 0.1


class Decision(Enum):
    KEY = "key"  # run the network on this frame
    BETWEEN = "between"  # things move where tracks are: interpolate or track to this frame
    STILL = "still"  # nothing changed since the keyframe: its boxes stand


def small_gray(image: np.ndarray) -> np.ndarray:
    """The frame as the small grey image the motion measure compares (int16, so differences do not wrap)."""
    return to_small_gray(image, MOTION_WIDTH)[0].astype(np.int16)


def changed_cells(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Boolean grid: the cells whose grey level moved by more than CHANGE_LEVEL."""
    if previous.shape != current.shape:
        return np.ones(current.shape, bool)
    return np.abs(current - previous) > CHANGE_LEVEL


def track_mask(boxes: np.ndarray, frame_hw: tuple[int, int], grid_hw: tuple[int, int], frames: int) -> np.ndarray:
    """Boolean grid: the cells inside the tracks' boxes (frame pixels), grown for the frames since the keyframe."""
    mask = np.zeros(grid_hw, bool)
    scale = np.array([grid_hw[1] / frame_hw[1], grid_hw[0] / frame_hw[0]] * 2)
    for box in np.asarray(boxes, np.float64).reshape(-1, 4) * scale:
        grow = MARGIN_CELLS + GROWTH * frames * (box[2:] - box[:2])
        x1, y1 = np.floor(np.maximum(box[:2] - grow, 0)).astype(int)
        x2, y2 = np.ceil(box[2:] + grow).astype(int)
        mask[y1:y2, x1:x2] = True
    return mask


def ceiling_frames(fps: float) -> int:
    """Frames between two keyframes at most in a still scene."""
    return max(1, math.ceil(CEILING_S * fps))


def decide(changed: np.ndarray, tracked: np.ndarray, since_key: int, ceiling: int) -> Decision:
    """The motion-aware rule for a frame since_key frames after the last keyframe (module docstring)."""
    if since_key >= ceiling:
        return Decision.KEY
    if (changed & ~tracked).sum() >= MIN_CHANGED_CELLS:
        return Decision.KEY
    if changed.sum() < MIN_CHANGED_CELLS:
        return Decision.STILL
    return Decision.KEY if since_key >= MOVING_EVERY else Decision.BETWEEN
