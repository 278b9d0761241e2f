"""The glue between the stream and the outputs: per-class counts from the producer's tap, rate-limited.

StreamRunner(on_publish=tap) calls tap(detected, result, published_perf_counter) on the render thread after
each frame; CountsTap counts result.detections per class name (tracked objects only when the tracker is on)
and hands the dict to Outputs.counts at most every `interval` seconds, and only when it changed, so a 30 fps
stream costs the outputs a few dict comparisons a second.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import numpy as np

DEFAULT_INTERVAL_S = 0.5


def class_counts(class_ids: np.ndarray, track_ids: np.ndarray | None, names: list[str]) -> dict[str, int]:
    """Return {class name: objects} for one frame's detections; with track ids, untracked ones (-1) are left out."""
    ids = np.asarray(class_ids)
    if track_ids is not None:
        ids = ids[np.asarray(track_ids) >= 0]
    counted = Counter(int(i) for i in ids)
    return {names[i] if 0 <= i < len(names) else str(i): n for i, n in sorted(counted.items())}


class CountsTap:
    """A StreamRunner on_publish tap that reports per-class counts to outputs.counts()."""

    def __init__(self, report: Callable[[dict[str, int]], None], names: list[str],
                 interval: float = DEFAULT_INTERVAL_S):
        self.report = report
        self.names = list(names)
        self.interval = interval
        self._last: dict[str, int] | None = None
        self._last_at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self, detected, result, published: float) -> None:
        detections = result.detections
        counts = class_counts(detections.class_ids, detections.track_ids, self.names)
        with self._lock:
            if counts == self._last or published - self._last_at < self.interval:
                return
            self._last, self._last_at = counts, published
        self.report(counts)
