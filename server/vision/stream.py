"""The producer of a running stream: decode, detect and render stages on their own threads.

    frame source thread ──(decoded frames)──▶ detect thread ──(one slot)──▶ render thread ──▶ FrameHub
      decode                                  pace, preprocess,            draw, encode,
                                              inference, postprocess,      publish, stats
                                              track

Each stage works on a different frame at the same time, so throughput approaches the slowest stage
instead of the sum of all of them. The hand-off to the render thread holds one frame: with realtime
pacing a newer frame replaces one not yet rendered (it is counted as dropped: realtime shows the
newest); flat out, the detect thread waits for the slot instead, so no frame of the file is lost.

The detect thread asks a Keyframer which frames the network runs on; with interpolation the frames between two
keyframes come out together once the later one is detected. Paced (realtime, or a live source), they wait in an
outbox and leave one per frame read, so the output keeps the input's cadence, a fixed number of frames late.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Callable

from server.vision.hub import FrameHub
from server.vision.keyframer import Keyframer, added_delay_frames, interpolates
from server.vision.pipeline import STAGES, Detected, FramePipeline, Span
from server.vision.settings import Settings
from server.vision.sources.base import Frame, Source
from server.vision.stats import StreamStats
from server.vision.trace import StreamTracing

logger = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 0.5
HANDOFF_POLL_S = 0.1
PEEK_TIMEOUT_S = 0.005  # a decoded frame waiting to be queued is handed over well within this


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

    def clear(self) -> None:
        """Forget an item no stage will take any more (the stream ended)."""
        with self._condition:
            self._item = None

    @property
    def closed(self) -> bool:
        return self._closed


def decode_span(frame: Frame) -> Span:
    """The span in which the source decoded this frame (on the source's own thread)."""
    end = frame.decoded_at
    return Span("decode", end - frame.decode_ms / 1000, end, "frame-source")


class StreamRunner:
    """A running stream: its stage threads, its hub, its stats, its trace.

    open_source(loop) is called on the detect thread; the source it returns says how fast it plays (fps) and
    whether it paces itself (a live camera: then realtime pacing never applies).
    """

    def __init__(
        self,
        open_source: Callable[[bool], Source],
        pipeline: FramePipeline,
        settings: Callable[[], Settings],
        on_end: Callable[[str | None], None],
        pipelined: bool = True,
        max_viewer_fps: float = 0.0,
        on_publish: Callable[[Detected, Detected, float], None] | None = None,
    ):
        self.open_source = open_source
        self.pipeline = pipeline
        self.settings = settings
        self.on_end = on_end
        self.pipelined = pipelined
        self.on_publish = on_publish  # (detected, result, published perf_counter): the benchmark's tap
        self.hub = FrameHub(max_viewer_fps)
        self.stats = StreamStats(STAGES)
        self.stop_event = threading.Event()
        self.tracing = StreamTracing(pipeline)
        self._source: Source | None = None
        self._keyframer: Keyframer | None = None
        self._outbox: collections.deque[Detected] = collections.deque()  # detected, waiting for their turn
        self._handoff = Handoff()
        self._source_ended = False
        self._render_error: str | None = None
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

    def record_trace(self, frames: int, onnx_profile: bool = False) -> dict:
        """Record the next `frames` published frames' stage spans; return them as a Chrome trace."""
        return self.tracing.record(frames, onnx_profile)

    @property
    def trace(self):
        """The trace being recorded, if any."""
        return self.tracing.recorder

    # -- stages ------------------------------------------------------------------------------
    def _run(self) -> None:
        error = None
        source = None
        try:
            source = self._source = self.open_source(self.settings().loop)
            self._detect_loop(source)
        except Exception as exc:  # the stream must end visibly, not die silently
            logger.exception("stream failed")
            error = f"stream failed: {exc}"
        finally:
            self._handoff.close()  # the render thread renders what is left, then ends
            if self.pipelined and self._render_thread.is_alive():
                self._render_thread.join(timeout=JOIN_TIMEOUT_S)
            self.tracing.close()
            if source is not None:
                source.close()
            self.stop_event.set()
            self.hub.close()
            self.stats.end()
            self.on_end(error or self._render_error)
            self._let_go()

    def _let_go(self) -> None:
        """Drop the frames a Stop left waiting: the service keeps an ended runner for its numbers, not its frames."""
        self._handoff.clear()
        self._outbox.clear()
        self._keyframer = None

    def _read(self, source: Source, timeout: float) -> Frame | None | bool:
        """Return the next frame, None at the end of the video, or False when none came within timeout."""
        try:
            frame = source.read(timeout=timeout)
        except queue.Empty:
            return False
        if frame is not None and frame.position == 0 and frame.index > 0:
            # The video looped: old tracks do not belong to the new first frame (the held ones get theirs first).
            self._outbox.extend(self._keyframer.flush(self.settings()))
            self._keyframer.reset()
            self.pipeline.reset()
        return frame

    def _detect_loop(self, source: Source) -> None:
        pacer = Pacer(source.fps)
        live = source.paces_itself
        self._keyframer = Keyframer(self.pipeline, source.fps, live=live)
        while not self.stop_event.is_set() and not self._source_ended:
            settings = self.settings()
            source.loop = settings.loop
            realtime = settings.realtime and not source.paces_itself
            frame = self._read(source, READ_TIMEOUT_S)
            if frame is False:
                continue
            if frame is None:
                logger.info("video ended")
                break
            if realtime:
                frame = self._pace(pacer, frame, source)
            else:
                pacer.restart(None)
            if frame is None or self.stop_event.is_set():
                continue
            # A trace takes frames detected after it began, so its spans and any operator profile match.
            recorder = self.tracing.before_detect(settings)
            self._outbox.extend(self._keyframer.push(frame, settings, recorder))
            lag = added_delay_frames(settings, live)
            # The frames taken come at the published rate (a live source drops the stale ones), not the nominal one.
            rate = self.stats.fps() or source.fps
            self.stats.keyframing(interpolates(settings, live), lag * 1000 / rate)
            paced = realtime or live
            self._send_due(frame.index - lag if paced else None, realtime)
        if not self.stop_event.is_set():
            self._drain(source)

    def _drain(self, source: Source) -> None:
        """The video ended: the frames still held get their boxes and are shown, paced as the others were."""
        self._outbox.extend(self._keyframer.flush(self.settings()))
        paced = self.settings().realtime or source.paces_itself
        while self._outbox and not self.stop_event.is_set():
            self._send_due(self._outbox[0].frame.index, realtime=False)
            if paced:
                self.stop_event.wait(1 / source.fps)

    def _send_due(self, up_to: int | None, realtime: bool) -> None:
        """Hand the outbox's frames up to index up_to (None: all of them) to the render stage, oldest first."""
        while self._outbox and (up_to is None or self._outbox[0].frame.index <= up_to):
            item = self._outbox.popleft()
            if not self.pipelined:
                self._render(item, self.settings())
            elif self._handoff.put(item, replace=realtime):
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

    def _render(self, item: Detected, settings: Settings) -> None:
        result = self.pipeline.render(item, settings, fps=self.stats.fps())
        self.hub.publish(result.jpeg)
        published = time.perf_counter()
        frame = result.frame
        latency_ms = (published - frame.decoded_at) * 1000 + frame.decode_ms
        self.stats.record(result.timings_ms, len(result.detections), latency_ms, nonfinite=result.nonfinite,
                          keyframe=result.detected)
        self._source.published(frame, published)  # a live source measures its lag from this
        if self.on_publish is not None:
            self.on_publish(item, result, published)
        self.tracing.published(result.trace, frame.index, [decode_span(frame), *result.spans], published)
