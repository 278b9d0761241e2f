"""Record the stage spans of the next N frames, per thread, as a Chrome trace (Perfetto, chrome://tracing).

StreamTracing is a running stream's side of it: one trace at a time, and the ONNX Runtime operator profile
a trace may ask for, run through a profiling copy of the detector in place of the usual one.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path

from server.vision.detector import Detector
from server.vision.pipeline import FramePipeline, FrameTrace, Span
from server.vision.settings import Settings

logger = logging.getLogger(__name__)

PROCESS_ID = 1
ORT_PROCESS_ID = 2
MAX_FRAMES = 600
DEFAULT_FRAMES = "60"
TRACE_TIMEOUT_S = 60.0
ONNX_PROFILE_WAIT_S = 5.0  # the detect thread hands the operator profile over right after the last frame

# perf_counter has no fixed origin; ONNX Runtime's profile counts from a wall-clock start. One offset,
# taken once, puts both on the same microsecond axis.
_WALL_MINUS_PERF_US = (time.time() - time.perf_counter()) * 1e6


def wall_us(perf_seconds: float) -> float:
    """Convert a time.perf_counter() reading to microseconds since the epoch."""
    return perf_seconds * 1e6 + _WALL_MINUS_PERF_US


class TraceRecorder:
    """Collect the spans of `frames` published frames; `ended` is set when they are all in or the stream ended."""

    def __init__(self, frames: int, onnx_profile: bool = False):
        if not 1 <= frames <= MAX_FRAMES:
            raise ValueError(f"frames must be from 1 to {MAX_FRAMES}, got {frames}")
        self.frames = frames
        self.onnx_profile = onnx_profile
        self.ended = threading.Event()
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
                self.ended.set()

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


class TraceBusy(RuntimeError):
    """A trace is already being recorded."""


class StreamTracing:
    """A running stream's trace: at most one recorder, and the operator profile its frames run under."""

    def __init__(self, pipeline: FramePipeline):
        self.pipeline = pipeline
        self.recorder: TraceRecorder | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._profiled = 0  # frames detected with the profiling session of a running trace
        self._profile_since = 0.0  # when its warm-up ended (perf_counter)

    def record(self, frames: int, onnx_profile: bool = False, timeout: float = TRACE_TIMEOUT_S) -> dict:
        """Record the next `frames` published frames' stage spans (fewer if the stream ends); a Chrome trace."""
        recorder = TraceRecorder(frames, onnx_profile)
        with self._lock:
            if self.recorder is not None:
                raise TraceBusy("a trace is already being recorded; wait for it to finish")
            self.recorder = recorder
            if self._closed:  # the stream ended already: nothing will come
                recorder.ended.set()
                recorder.onnx_done.set()
        try:
            deadline = time.monotonic() + timeout
            recorder.ended.wait(timeout)
            if onnx_profile:
                recorder.onnx_done.wait(max(0.0, min(ONNX_PROFILE_WAIT_S, deadline - time.monotonic())))
        finally:
            self.recorder = None
        return recorder.chrome_trace()

    def before_detect(self, settings: Settings) -> TraceRecorder | None:
        """The recorder the next frame belongs to; start or finish the operator profile it asked for."""
        recorder = self.recorder
        wanted = recorder is not None and recorder.onnx_profile and not recorder.onnx_done.is_set()
        if self.pipeline.profiling is None and wanted:
            self._start_onnx_profile(settings)
        elif self.pipeline.profiling is not None and (not wanted or self._profiled >= recorder.frames):
            self._finish_onnx_profile(recorder if wanted else None)
        self._profiled += 1
        return recorder

    def published(self, recorder: FrameTrace | None, index: int, spans: list[Span], published_at: float) -> None:
        """Add a published frame to the trace that was recording when its detection began, if still running."""
        if recorder is not None and recorder is self.recorder:
            recorder.add_frame(index, spans, published_at)

    def close(self) -> None:
        """The stream ended: drop a profile under way and let a waiting trace return what it has."""
        if self.pipeline.profiling is not None:
            self._finish_onnx_profile(None)
        with self._lock:
            self._closed = True
            recorder = self.recorder
        if recorder is not None:
            recorder.ended.set()
            recorder.onnx_done.set()

    def _start_onnx_profile(self, settings: Settings) -> None:
        """Run the traced frames through a profiling copy of the current session."""
        detector = self.pipeline.detector_for(settings)
        prefix = Path(tempfile.gettempdir()) / f"edge-trace-{uuid.uuid4().hex}"
        profiling = Detector(detector.path, threads=detector.threads, profile_prefix=str(prefix))
        profiling.warm_up(profiling.fixed_hw or (settings.imgsz, settings.imgsz))
        self.pipeline.profiling, self._profiled, self._profile_since = profiling, 0, time.perf_counter()

    def _finish_onnx_profile(self, recorder: TraceRecorder | None) -> None:
        profiling, self.pipeline.profiling = self.pipeline.profiling, None
        session = profiling.session
        path = session.end_profiling()
        if recorder is not None:
            recorder.add_onnx_profile(path, session.get_profiling_start_time_ns(), self._profile_since)
        else:
            Path(path).unlink(missing_ok=True)


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
