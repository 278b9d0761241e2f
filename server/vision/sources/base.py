"""What every frame source is to the producer: the Source protocol, the Frame it hands over, shared constants."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

DEFAULT_FPS = 25.0
MAX_FPS = 1000.0  # a declared rate above this is a container's or camera's nonsense, not a frame rate
# Frames every source hands a model build (int8 calibration); the tuner calibrates on a quarter and judges on half.
CALIBRATION_FRAMES = 96


def sane_fps(fps: float) -> float:
    """The declared frame rate when it is believable, else DEFAULT_FPS."""
    return float(fps) if 0 < fps <= MAX_FPS else DEFAULT_FPS


@dataclass(frozen=True)
class Frame:
    """A decoded frame, its place in the stream and in the file, and what decoding it cost."""

    index: int
    image: np.ndarray
    decode_ms: float
    position: int = 0
    decoded_at: float = field(default_factory=time.perf_counter)  # when decoding ended (perf_counter)


class Source(Protocol):
    """Where the producer's frames come from (a video file or a live camera); decoding runs on its own thread."""

    loop: bool  # start again at the end (a file); a live source has no end
    fps: float  # the nominal rate realtime pacing follows
    paces_itself: bool  # a live camera sets the pace: pacing it against a nominal fps would only add lag

    def read(self, timeout: float) -> Frame | None:
        """Return the next frame, None at the end; raise queue.Empty when none came within timeout."""

    def published(self, frame: Frame, published_at: float) -> None:
        """Hear that frame reached the viewers at published_at (perf_counter)."""

    def status(self) -> dict:
        """What /api/status shows of the source."""

    def calibration_frames(self, count: int) -> list[np.ndarray]:
        """Up to count BGR images for calibrating a model on what this source shows."""

    def close(self) -> None: ...
