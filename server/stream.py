"""One producer thread per running stream, publishing the latest JPEG to any number of viewers."""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Callable, Iterator

from server import mjpeg
from server.pipeline import STAGES, FramePipeline
from server.settings import Settings
from server.video import FrameSource, VideoInfo

logger = logging.getLogger(__name__)

VIEWER_POLL_S = 0.25
JOIN_TIMEOUT_S = 5.0
EMA_ALPHA = 0.1


class FrameHub:
    """Hold the latest JPEG; viewers wait for a newer one, so a slow viewer skips frames instead of queueing."""

    def __init__(self):
        self._condition = threading.Condition()
        self._part: bytes | None = None
        self._sequence = 0
        self._closed = False
        self.viewers = 0

    def publish(self, jpeg: bytes) -> None:
        """Make jpeg the latest frame; its multipart framing is built once here, not once per viewer."""
        part = mjpeg.part(jpeg)
        with self._condition:
            self._part, self._sequence = part, self._sequence + 1
            self._condition.notify_all()

    def close(self) -> None:
        """Wake every viewer so its response ends."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_newer(self, seen: int, timeout: float) -> tuple[int, bytes | None]:
        """Return (sequence, multipart part) newer than seen, or (seen, None) on timeout or close."""
        with self._condition:
            self._condition.wait_for(lambda: self._closed or self._sequence > seen, timeout)
            if self._closed or self._sequence <= seen:
                return seen, None
            return self._sequence, self._part

    def frames(self) -> Iterator[bytes]:
        """Yield multipart parts until the hub closes; ends cleanly when the viewer disconnects."""
        with self._condition:
            self.viewers += 1
        try:
            seen = 0
            while not self._closed:
                seen, part = self.wait_newer(seen, VIEWER_POLL_S)
                if part is not None:
                    yield part
        finally:
            with self._condition:
                self.viewers -= 1


class StreamStats:
    """Moving averages of stage timings and the published frame rate."""

    def __init__(self):
        self._lock = threading.Lock()
        self.frames = 0
        self.detections = 0
        self.latency_ms = {stage: 0.0 for stage in (*STAGES, "total")}
        self._published = collections.deque(maxlen=60)

    def record(self, timings_ms: dict[str, float], detections: int) -> None:
        total = sum(timings_ms.get(stage, 0.0) for stage in STAGES)
        with self._lock:
            first = self.frames == 0
            for stage, value in {**timings_ms, "total": total}.items():
                old = self.latency_ms.get(stage, 0.0)
                self.latency_ms[stage] = value if first else old + EMA_ALPHA * (value - old)
            self.frames += 1
            self.detections = detections
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
            frames, detections = self.frames, self.detections
        return {
            "fps": round(self.fps(), 2),
            "frames": frames,
            "viewers": viewers,
            "detections": detections,
            "latency_ms": latency,
        }


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
    ):
        self.video_path = video_path
        self.video = video
        self.pipeline = pipeline
        self.settings = settings
        self.on_end = on_end
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

    def _status_text(self, settings: Settings) -> str:
        mode = f"{self.pipeline.precision} {settings.imgsz}"
        if settings.detect_every > 1:
            mode += f" det/{settings.detect_every}"
        return f"{self.stats.fps():.1f} fps | {mode} | {self.stats.detections} objects"

    def _run(self) -> None:
        error = None
        source = FrameSource(self.video_path, loop=self.settings().loop)
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
            result = self.pipeline.process(frame, settings, self._status_text(settings))
            self.hub.publish(result.jpeg)
            self.stats.record(result.timings_ms, len(result.detections))

    def _wait_until_due(self, pacer: Pacer, index: int) -> bool:
        """Sleep until the frame is due; return False when it is already a frame late (drop it)."""
        delay = pacer.delay(index)
        if delay < -pacer.interval:
            return False
        if delay > 0:
            self.stop_event.wait(delay)
        return not self.stop_event.is_set()
