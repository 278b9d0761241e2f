"""Live numbers of a running stream: stage timings, frame rate, frame latency, drops."""

from __future__ import annotations

import collections
import threading
import time

from server.vision.pipeline import STAGES

EMA_ALPHA = 0.1
FPS_WINDOW_S = 2.0
PUBLISHED_WINDOW = 120  # frames the rates are measured over


class StreamStats:
    """Moving averages of stage timings and frame latency, and the published frame rate."""

    def __init__(self, stages: tuple[str, ...] = STAGES):
        self._lock = threading.Lock()
        self.stages = stages
        self.clear()

    def clear(self) -> None:
        """Forget everything, as when the stream stops or the uploads are reset."""
        with self._lock:
            self.frames = 0
            self.detections = 0
            self.dropped = 0
            self.nonfinite = 0  # boxes dropped because a box or score was NaN/infinite
            self.latency_ms = {stage: 0.0 for stage in (*self.stages, "total")}
            self.frame_latency_ms = 0.0
            self._published: collections.deque[float] = collections.deque(maxlen=PUBLISHED_WINDOW)
            self._keyframes: collections.deque[bool] = collections.deque(maxlen=PUBLISHED_WINDOW)
            self.interpolating = False
            self.added_delay_ms = 0.0
            self._ended = False

    def end(self) -> None:
        """The stream ended by itself: keep the counts, but nothing is being published any more."""
        with self._lock:
            self._ended = True

    def _average(self, old: float, value: float) -> float:
        return value if self.frames == 0 else old + EMA_ALPHA * (value - old)

    def record(self, timings_ms: dict[str, float], detections: int, frame_latency_ms: float = 0.0,
               nonfinite: int = 0, keyframe: bool = True) -> None:
        """Count one published frame: its stage times, boxes, decode-to-publish latency and whether the network ran."""
        total = sum(timings_ms.get(stage, 0.0) for stage in self.stages)
        with self._lock:
            for stage, value in {**timings_ms, "total": total}.items():
                self.latency_ms[stage] = self._average(self.latency_ms.get(stage, 0.0), value)
            self.frame_latency_ms = self._average(self.frame_latency_ms, frame_latency_ms)
            self.frames += 1
            self.detections = detections
            self.nonfinite += nonfinite
            self._published.append(time.monotonic())
            self._keyframes.append(keyframe)

    def keyframing(self, interpolating: bool, added_delay_ms: float) -> None:
        """Say whether frames wait for the next keyframe, and how late that makes a paced output."""
        with self._lock:
            self.interpolating, self.added_delay_ms = interpolating, added_delay_ms

    def _keyframe_rates(self, fps: float) -> dict:
        with self._lock:
            flags, interpolating, delay = list(self._keyframes), self.interpolating, self.added_delay_ms
        per_frame = sum(flags) / len(flags) if flags else 0.0
        return {"per_frame": round(per_frame, 3), "per_s": round(per_frame * fps, 2),
                "interpolating": interpolating, "added_delay_ms": round(delay, 1)}

    def drop(self, count: int = 1) -> None:
        """Count frames decoded but never published (late for realtime, or overtaken by a newer one)."""
        with self._lock:
            self.dropped += count

    def fps(self) -> float:
        with self._lock:
            stamps = [] if self._ended else list(self._published)
        if len(stamps) < 2 or time.monotonic() - stamps[-1] > FPS_WINDOW_S:
            return 0.0
        recent = [t for t in stamps if t >= stamps[-1] - FPS_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def snapshot(self, viewers: int) -> dict:
        with self._lock:
            latency = {stage: round(value, 2) for stage, value in self.latency_ms.items()}
            frames, detections, dropped, nonfinite = self.frames, self.detections, self.dropped, self.nonfinite
            frame_latency = round(self.frame_latency_ms, 2)
        fps = self.fps()
        return {
            "fps": round(fps, 2),
            "frames": frames,
            "viewers": viewers,
            "detections": detections,
            "dropped": dropped,
            "dropped_nonfinite": nonfinite,
            "latency_ms": latency,
            "frame_latency_ms": frame_latency,
            "keyframes": self._keyframe_rates(fps),  # network runs per published frame and per second
        }
