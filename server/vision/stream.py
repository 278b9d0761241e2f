"""One producer thread per running stream: frames from a source, through the pipeline, into the hub."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from server.vision.hub import FrameHub
from server.vision.pipeline import FramePipeline
from server.vision.settings import Settings
from server.vision.stats import StreamStats
from server.vision.video import Frame, FrameSource, VideoInfo

logger = logging.getLogger(__name__)



JOIN_TIMEOUT_S = 5.0


class Pacer:
    """Decide, for realtime playback, whether a frame is due, late (drop it) or early (wait)."""

    def __init__(self, fps: float):
        self.interval = 1.0 / fps
        self.started = time.monotonic()
        self.first_index: int | None = None

    def delay(self, index: int) -> float:
        """Seconds until the frame is due; negative when it is late."""
        if self.first_index is None:
            self.first_index = index
        due = self.started + (index - self.first_index) * self.interval
        return due - time.monotonic()


class StreamRunner:
    """A running stream: its producer thread, its hub, its stats."""

    def __init__(
        self,
        video_path: str,
        video: VideoInfo,
        pipeline: FramePipeline,
        settings: Callable[[], Settings],
        on_end: Callable[[str | None], None],
        open_source: Callable[[bool], object] | None = None,
        on_publish: Callable[[Frame, object, float], None] | None = None,
    ):
        self.video_path = video_path
        self.video = video
        self.pipeline = pipeline
        self.settings = settings
        self.on_end = on_end
        # The same hooks as the pipelined producer's: a live source instead of the file, a tap after publishing.
        self.open_source = open_source or (lambda loop: FrameSource(self.video_path, loop=loop))
        self.on_publish = on_publish
        self.hub = FrameHub()
        self.stats = StreamStats()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stream-producer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the producer to stop, wake every viewer and wait for the thread."""
        self.stop_event.set()
        self.hub.close()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=JOIN_TIMEOUT_S)
            if self.thread.is_alive():
                logger.warning("stream producer did not stop within %.0f s", JOIN_TIMEOUT_S)

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self.stop_event.is_set()

    def _run(self) -> None:
        error = None
        source = self.open_source(self.settings().loop)
        try:
            self._produce(source)
        except Exception as exc:  # the stream must end visibly, not die silently
            logger.exception("stream failed")
            error = f"stream failed: {exc}"
        finally:
            source.close()
            self.hub.close()
            self.stop_event.set()
            self.on_end(error)

    def _produce(self, source: FrameSource) -> None:
        pacer = Pacer(self.video.fps)
        while not self.stop_event.is_set():
            settings = self.settings()
            source.loop = settings.loop
            try:
                frame = source.read(timeout=0.5)
            except queue.Empty:
                continue
            if frame is None:
                logger.info("video ended")
                return
            if frame.position == 0 and frame.index > 0:
                self.pipeline.reset()
            if settings.realtime and not self._wait_until_due(pacer, frame.index):
                continue
            if not settings.realtime:
                pacer = Pacer(self.video.fps)
            result = self.pipeline.process(frame, settings, fps=self.stats.fps())
            self.hub.publish(result.jpeg)
            if self.on_publish is not None:
                self.on_publish(frame, result, time.perf_counter())
            self.stats.record(result.timings_ms, len(result.detections))

    def _wait_until_due(self, pacer: Pacer, index: int) -> bool:
        """Sleep until the frame is due; return False when it is already a frame late (drop it)."""
        delay = pacer.delay(index)
        if delay < -pacer.interval:
            return False
        if delay > 0:
            self.stop_event.wait(delay)
        return not self.stop_event.is_set()
