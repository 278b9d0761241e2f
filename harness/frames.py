"""The demo's frames in memory: what tests and measurements run a model on when any picture of its scene will do."""

from __future__ import annotations

import numpy as np

from server.demo.video import render_frames
from server.vision.sources.base import CALIBRATION_FRAMES

DEMO_FRAMES_FPS = 2  # the demo's scene changes slowly: 2 frames a second apart are different pictures
DEMO_SECONDS = 20  # the demo video's length (render_frames' default)


def demo_frames(count: int = 6) -> list[np.ndarray]:
    """count BGR frames of the demo video, half a second apart."""
    return list(render_frames(seconds=count / DEMO_FRAMES_FPS, fps=DEMO_FRAMES_FPS))


def demo_calibration_frames() -> list[np.ndarray]:
    """CALIBRATION_FRAMES frames spread over the demo video's 20 s: what the on-device tuning of a demo stream gets."""
    return list(render_frames(seconds=DEMO_SECONDS, fps=CALIBRATION_FRAMES / DEMO_SECONDS))
