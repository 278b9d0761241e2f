"""The demo's frames in memory: what tests and measurements run a model on when any picture of its scene will do."""

from __future__ import annotations

import numpy as np

from server.demo.video import render_frames

DEMO_FRAMES_FPS = 2  # the demo's scene changes slowly: 2 frames a second apart are different pictures


def demo_frames(count: int = 6) -> list[np.ndarray]:
    """count BGR frames of the demo video, half a second apart."""
    return list(render_frames(seconds=count / DEMO_FRAMES_FPS, fps=DEMO_FRAMES_FPS))
