"""A running stream's numbers: moving averages of stage timings, the published frame rate, the last detections."""

from __future__ import annotations

import collections
import threading
import time

from server.vision.pipeline import STAGES

EMA_ALPHA = 0.1


class StreamStats:
    """Moving averages of stage timings and the published frame rate."""

    def __init__(self):
        self._lock = threading.Lock()
        self.frames = 0
        self.detections = 0
        self.nonfinite = 0  # detections dropped because a box or score was NaN/infinite, since the stream began
        self.latency_ms = {stage: 0.0 for stage in (*STAGES, "total")}
        self._published = collections.deque(maxlen=60)

    def record(self, timings_ms: dict[str, float], detections: int, nonfinite: int = 0) -> None:
        total = sum(timings_ms.get(stage, 0.0) for stage in STAGES)
        with self._lock:
            first = self.frames == 0
            for stage, value in {**timings_ms, "total": total}.items():
                old = self.latency_ms.get(stage, 0.0)
                self.latency_ms[stage] = value if first else old + EMA_ALPHA * (value - old)
            self.frames += 1
            self.detections = detections
            self.nonfinite += nonfinite
            self._published.append(time.monotonic())

    def fps(self) -> float:
        with self._lock:
            stamps = list(self._published)
        if len(stamps) < 2 or time.monotonic() - stamps[-1] > 2.0:
            return 0.0
        recent = [t for t in stamps if t >= stamps[-1] - 2.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def snapshot(self, viewers: int) -> dict:
        with self._lock:
            latency = {stage: round(value, 2) for stage, value in self.latency_ms.items()}
            frames, detections, nonfinite = self.frames, self.detections, self.nonfinite
        return {
            "fps": round(self.fps(), 2),
            "frames": frames,
            "viewers": viewers,
            "detections": detections,
            "dropped_nonfinite": nonfinite,
            "latency_ms": latency,
        }
