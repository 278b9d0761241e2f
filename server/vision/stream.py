"""The producer of a running stream: decode, detect and render stages on their own threads.

    frame source thread ──(decoded frames)──▶ detect thread ──(one slot)──▶ render thread ──▶ FrameHub
      decode                                  pace, preprocess,            draw, encode,
                                              inference, postprocess,      publish, stats
                                              track

Each stage works on a different frame at the same time, so throughput approaches the slowest stage
instead of the sum of all of them. The hand-off to the render thread holds one frame: with realtime
pacing a newer frame replaces one not yet rendered (it is counted as dropped: realtime shows the
newest); flat out, the detect thread waits for the slot instead, so no frame of the file is lost.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from server.vision.detector import Detector
from server.vision.hub import FrameHub
from server.vision.pipeline import STAGES, Detected, FramePipeline, FrameResult, Span
from server.vision.settings import Settings
from server.vision.stats import StreamStats
from server.vision.trace import TraceRecorder
from server.vision.video import Frame, FrameSource, VideoInfo

logger = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 0.5
HANDOFF_POLL_S = 0.1
PEEK_TIMEOUT_S = 0.005  # a decoded frame waiting to be queued is handed over well within this
TRACE_TIMEOUT_S = 60.0


class Source(Protocol):
    """Where frames come from: a video file (FrameSource) or a live camera; decoding runs on its own thread."""

    loop: bool

    def read(self, timeout: float) -> Frame | None:
        """Return the next frame, None at the end; raise queue.Empty when none came within timeout."""

    def close(self) -> None: ...


class TraceBusy(RuntimeError):
    """A trace is already being recorded."""


class Pacer:
    """Decide, for realtime playback, whether a frame is due, late (drop it) or early (wait)."""

    def __init__(self, fps: float):
        self.interval = 1.0 / fps
        self.restart(None)

    def restart(self, index: int | None) -> None:
        """Make frame `index` due now (None: the next frame asked about)."""
        self.started = time.monotonic()
        self.first_index = index

    def delay(self, index: int) -> float:
        """Seconds until the frame is due; negative when it is late."""
        if self.first_index is None:
            self.first_index = index
        due = self.started + (index - self.first_index) * self.interval
        return due - time.monotonic()


@dataclass
class Traced:
    """A detected frame on its way to the render stage, with the trace recording it (if any)."""

    item: Detected
    recorder: TraceRecorder | None


class Handoff:
    """A one-slot mailbox between two stage threads."""

    def __init__(self):
        self._condition = threading.Condition()
        self._item: object | None = None
        self._closed = False

    def put(self, item: object, replace: bool) -> bool:
        """Leave item for the next stage; return True when it overwrote one never taken (a dropped frame).

        replace=False waits for the slot to empty instead (or for close).
        """
        with self._condition:
            if not replace:
                while self._item is not None and not self._closed:
                    self._condition.wait(HANDOFF_POLL_S)
            dropped = self._item is not None
            self._item = item
            self._condition.notify_all()
            return dropped

    def take(self, timeout: float) -> object | None:
        """Return the waiting item (even after close, so the last frames are not lost); None if none came."""
        with self._condition:
            self._condition.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            self._condition.notify_all()
            return item

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def decode_span(frame: Frame) -> Span:
    """The span in which the source decoded this frame (on the source's own thread)."""
    end = frame.decoded_at
    return Span("decode", end - frame.decode_ms / 1000, end, "frame-source")


class StreamRunner:
    """A running stream: its stage threads, its hub, its stats."""

    def __init__(
        self,
        video_path: str,
        video: VideoInfo,
        pipeline: FramePipeline,
        settings: Callable[[], Settings],
        on_end: Callable[[str | None], None],
        pipelined: bool = True,
        max_viewer_fps: float = 0.0,
        open_source: Callable[[bool], Source] | None = None,
        on_publish: Callable[[Detected, FrameResult, float], None] | None = None,
    ):
        self.video_path = video_path
        self.video = video
        self.pipeline = pipeline
        self.settings = settings
        self.on_end = on_end
        self.pipelined = pipelined
        # One frame decoded ahead is enough to hide decoding (it is faster than detection); more would only
        # make each frame older by the time it is shown.
        self.open_source = open_source or (lambda loop: FrameSource(self.video_path, loop=loop, ahead=1))
        self.on_publish = on_publish  # (detected, result, published perf_counter): the benchmark's tap
        self.hub = FrameHub(max_viewer_fps)
        self.stats = StreamStats(STAGES)
        self.stop_event = threading.Event()
        self.trace: TraceRecorder | None = None
        self._trace_lock = threading.Lock()
        self._handoff = Handoff()
        self._source_ended = False
        self._render_error: str | None = None
        self._profiled = 0  # frames detected with the profiling session of a running trace
        self._profile_since = 0.0  # when its warm-up ended (perf_counter)
        self.thread = threading.Thread(target=self._run, name="stream-detect", daemon=True)
        self._render_thread = threading.Thread(target=self._render_loop, name="stream-render", daemon=True)

    # -- control -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.pipelined:
            self._render_thread.start()
        self.thread.start()

    def stop(self) -> None:
        """Stop every stage, end every viewer's response, wait for the threads and clear the stats."""
        self.stop_event.set()  # first, so nothing publishes into a closed hub or reads as "running"
        self._handoff.close()
        self.hub.close()
        if threading.current_thread() not in (self.thread, self._render_thread):
            self.thread.join(timeout=JOIN_TIMEOUT_S)
            if self.thread.is_alive():
                logger.warning("stream producer did not stop within %.0f s", JOIN_TIMEOUT_S)
        self.stats.clear()

    @property
    def running(self) -> bool:
        """Whether the producer is alive and was not asked to stop."""
        return self.thread.is_alive() and not self.stop_event.is_set()

    def threads(self) -> list[threading.Thread]:
        """The stage threads this runner started (the source's decoder thread is the source's own)."""
        return [self.thread, self._render_thread] if self.pipelined else [self.thread]

    # -- trace -------------------------------------------------------------------------------
    def record_trace(self, frames: int, onnx_profile: bool = False, timeout: float = TRACE_TIMEOUT_S) -> dict:
        """Record the next `frames` published frames' stage spans; return them as a Chrome trace."""
        recorder = TraceRecorder(frames, onnx_profile)
        with self._trace_lock:
            if self.trace is not None:
                raise TraceBusy("a trace is already being recorded; wait for it to finish")
            self.trace = recorder
        try:
            deadline = time.monotonic() + timeout
            while not recorder.done.wait(0.1) and self.running and time.monotonic() < deadline:
                pass
            if onnx_profile:  # the detect thread hands the operator profile over after its last frame
                recorder.onnx_done.wait(max(0.0, min(5.0, deadline - time.monotonic())))
        finally:
            self.trace = None
        return recorder.chrome_trace()

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

    def _profile_step(self, recorder: TraceRecorder | None, settings: Settings) -> None:
        """Before each detection: start or finish an operator profile the running trace asked for."""
        wanted = recorder is not None and recorder.onnx_profile and not recorder.onnx_done.is_set()
        if wanted and self.pipeline.profiling is None and self.pipeline.detector_for(settings).engine_name != "onnxruntime":
            recorder.onnx_done.set()  # an operator profile is ONNX Runtime's: the trace comes without one
            wanted = False
        if self.pipeline.profiling is None and wanted:
            self._start_onnx_profile(settings)
        elif self.pipeline.profiling is not None and (not wanted or self._profiled >= recorder.frames):
            self._finish_onnx_profile(recorder if wanted else None)

    # -- stages ------------------------------------------------------------------------------
    def _run(self) -> None:
        error = None
        source = None
        try:
            source = self.open_source(self.settings().loop)
            self._detect_loop(source)
        except Exception as exc:  # the stream must end visibly, not die silently
            logger.exception("stream failed")
            error = f"stream failed: {exc}"
        finally:
            self._handoff.close()  # the render thread renders what is left, then ends
            if self.pipelined and self._render_thread.is_alive():
                self._render_thread.join(timeout=JOIN_TIMEOUT_S)
            if self.pipeline.profiling is not None:
                self._finish_onnx_profile(None)
            if source is not None:
                source.close()
            self.stop_event.set()
            self.hub.close()
            self.stats.end()
            self.on_end(error or self._render_error)

    def _read(self, source: Source, timeout: float) -> Frame | None | bool:
        """Return the next frame, None at the end of the video, or False when none came within timeout."""
        try:
            frame = source.read(timeout=timeout)
        except queue.Empty:
            return False
        if frame is not None and frame.position == 0 and frame.index > 0:
            self.pipeline.reset()  # the video looped: old tracks do not belong to the new first frame
        return frame

    def _detect_loop(self, source: Source) -> None:
        pacer = Pacer(self.video.fps)
        while not self.stop_event.is_set() and not self._source_ended:
            settings = self.settings()
            source.loop = settings.loop
            frame = self._read(source, READ_TIMEOUT_S)
            if frame is False:
                continue
            if frame is None:
                logger.info("video ended")
                return
            if settings.realtime:
                frame = self._pace(pacer, frame, source)
            else:
                pacer.restart(None)
            if frame is None or self.stop_event.is_set():
                continue
            # A trace takes frames detected after it began, so its spans and any operator profile match.
            recorder = self.trace
            self._profile_step(recorder, settings)
            item = Traced(self.pipeline.detect(frame, settings), recorder)
            self._profiled += 1
            if not self.pipelined:
                self._render(item, settings)
            elif self._handoff.put(item, replace=settings.realtime):
                self.stats.drop()

    def _pace(self, pacer: Pacer, frame: Frame, source: Source) -> Frame | None:
        """Wait until frame is due; when it is a frame late, skip to a newer one if the source has one.

        A late frame with nothing newer behind it (decoding is slower than the video's fps) is shown
        anyway and the clock restarts from it, so a slow source still streams, at the rate it decodes.
        """
        while pacer.delay(frame.index) < -pacer.interval:
            newer = self._read(source, PEEK_TIMEOUT_S)
            if newer is False or newer is None:
                self._source_ended = newer is None
                pacer.restart(frame.index)
                break
            self.stats.drop()
            frame = newer
        delay = pacer.delay(frame.index)
        if delay > 0:
            self.stop_event.wait(delay)
        return frame

    def _render_loop(self) -> None:
        try:
            while not self.stop_event.is_set():
                item = self._handoff.take(HANDOFF_POLL_S)
                if item is not None:
                    self._render(item, self.settings())
                elif self._handoff.closed:
                    return
        except Exception as exc:  # reported as the stream's error by the detect thread
            logger.exception("rendering failed")
            self._render_error = f"stream failed: {exc}"
            self.stop_event.set()
            self._handoff.close()  # a detect thread waiting for the slot must not wait forever

    def _render(self, traced: Traced, settings: Settings) -> None:
        item = traced.item
        result = self.pipeline.render(item, settings, fps=self.stats.fps())
        self.hub.publish(result.jpeg)
        published = time.perf_counter()
        frame = item.frame
        latency_ms = (published - frame.decoded_at) * 1000 + frame.decode_ms
        self.stats.record(result.timings_ms, len(result.detections), latency_ms, nonfinite=result.nonfinite)
        if self.on_publish is not None:
            self.on_publish(item, result, published)
        recorder = traced.recorder
        if recorder is not None and recorder is self.trace:
            recorder.add_frame(frame.index, [decode_span(frame), *result.spans], published)
