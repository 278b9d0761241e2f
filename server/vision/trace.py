"""Record the stage spans of the next N frames, per thread, as a Chrome trace (Perfetto, chrome://tracing)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from server.vision.pipeline import Span

logger = logging.getLogger(__name__)

PROCESS_ID = 1
ORT_PROCESS_ID = 2
MAX_FRAMES = 600
DEFAULT_FRAMES = "60"

# perf_counter has no fixed origin; ONNX Runtime's profile counts from a wall-clock start. One offset,
# taken once, puts both on the same microsecond axis.
_WALL_MINUS_PERF_US = (time.time() - time.perf_counter()) * 1e6


def wall_us(perf_seconds: float) -> float:
    """Convert a time.perf_counter() reading to microseconds since the epoch."""
    return perf_seconds * 1e6 + _WALL_MINUS_PERF_US


class TraceRecorder:
    """Collect the spans of `frames` published frames; `done` is set when they are all in."""

    def __init__(self, frames: int, onnx_profile: bool = False):
        if not 1 <= frames <= MAX_FRAMES:
            raise ValueError(f"frames must be from 1 to {MAX_FRAMES}, got {frames}")
        self.frames = frames
        self.onnx_profile = onnx_profile
        self.done = threading.Event()
        self.onnx_done = threading.Event()
        self._lock = threading.Lock()
        self._events: list[dict] = []
        self._threads: dict[str, int] = {}
        self._recorded = 0
        self._onnx_events: list[dict] = []

    @property
    def recorded(self) -> int:
        return self._recorded

    def _thread_id(self, name: str) -> int:
        return self._threads.setdefault(name, len(self._threads) + 1)

    def add_frame(self, index: int, spans: list[Span], published_at: float) -> None:
        """Add one published frame's spans (each on the thread that ran it) and its publish instant."""
        with self._lock:
            if self._recorded >= self.frames:
                return
            for span in spans:
                self._events.append({
                    "name": span.stage, "cat": "stage", "ph": "X", "pid": PROCESS_ID,
                    "tid": self._thread_id(span.thread), "ts": round(wall_us(span.start), 1),
                    "dur": round(max(0.0, span.end - span.start) * 1e6, 1), "args": {"frame": index},
                })
            self._events.append({
                "name": "publish", "cat": "stage", "ph": "i", "s": "t", "pid": PROCESS_ID,
                "tid": self._thread_id(spans[-1].thread if spans else "publish"),
                "ts": round(wall_us(published_at), 1), "args": {"frame": index},
            })
            self._recorded += 1
            if self._recorded >= self.frames:
                self.done.set()

    def add_onnx_profile(self, profile_path: str | Path, start_ns: int, since: float = 0.0) -> None:
        """Merge ONNX Runtime's operator profile (written by end_profiling) onto the same time axis.

        Events before `since` (perf_counter seconds: the warm-up run) are left out.
        """
        path = Path(profile_path)
        try:
            events = json.loads(path.read_text())
        except (OSError, ValueError):
            logger.warning("could not read the ONNX Runtime profile %s", path)
            self.onnx_done.set()
            return
        finally:
            path.unlink(missing_ok=True)
        offset_us, since_us = start_ns / 1000, wall_us(since) if since else 0.0
        kept = []
        for event in events:
            if event.get("ph") != "X" or event.get("cat") not in ("Node", "Session"):
                continue
            if event["ts"] + offset_us >= since_us:
                kept.append({**event, "pid": ORT_PROCESS_ID, "ts": event["ts"] + offset_us})
        with self._lock:
            self._onnx_events = kept
        self.onnx_done.set()

    def chrome_trace(self) -> dict:
        """Return the trace in Chrome's JSON object format."""
        with self._lock:
            names = [{"name": "process_name", "ph": "M", "pid": PROCESS_ID, "args": {"name": "edge-detect stream"}}]
            names += [
                {"name": "thread_name", "ph": "M", "pid": PROCESS_ID, "tid": tid, "args": {"name": name}}
                for name, tid in self._threads.items()
            ]
            if self._onnx_events:
                names.append({"name": "process_name", "ph": "M", "pid": ORT_PROCESS_ID,
                              "args": {"name": "onnxruntime operators"}})
            return {
                "traceEvents": names + self._events + self._onnx_events,
                "displayTimeUnit": "ms",
                "otherData": {"frames": self._recorded, "requested": self.frames},
            }


class TraceRequestInvalid(ValueError):
    """The trace request's parameters are out of range (HTTP 400)."""


def parse_trace_request(frames: str | None, onnx: str | None) -> tuple[int, bool]:
    """Check ?frames=N (1-MAX_FRAMES, default DEFAULT_FRAMES) and ?onnx=0|1; return them."""
    text = DEFAULT_FRAMES if frames is None else frames
    try:
        count = int(text)
    except ValueError:
        raise TraceRequestInvalid(f"frames must be a whole number from 1 to {MAX_FRAMES}, got {text!r}") from None
    if not 1 <= count <= MAX_FRAMES:
        raise TraceRequestInvalid(f"frames must be a whole number from 1 to {MAX_FRAMES}, got {count}")
    flags = {None: False, "0": False, "false": False, "1": True, "true": True}
    if (onnx or "").lower() not in flags and onnx is not None:
        raise TraceRequestInvalid(f"onnx must be 0 or 1, got {onnx!r}")
    return count, flags[onnx.lower() if onnx else None]
