"""Live sources: RTSP, HTTP MJPEG/HLS, V4L2 webcams and a camera command, read for the newest frame.

A live source is read on its own thread that keeps only the latest frame: when the stream produces frames
faster than the detector consumes them, older frames are dropped (and counted) instead of queueing, so the
lag from camera to browser cannot grow. When a source fails or stalls it is reopened with capped
exponential backoff; meanwhile the consumer gets a "reconnecting" placeholder about once a second so viewers
stay connected and see why nothing moves.

Credentials stay out of logs and status: see spec.SourceSpec.label.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from server.config import Config
from server.vision.sources.base import CALIBRATION_FRAMES, DEFAULT_FPS, Frame
from server.vision.sources.connections import Connection, open_connection
from server.vision.sources.spec import SourceInfo, SourceSpec, describe

logger = logging.getLogger(__name__)

STATES = ("connecting", "live", "reconnecting", "ended")
PLACEHOLDER_EVERY_S = 1.0
CLOSE_WAIT_S = 1.0
LAG_WINDOW = 100  # frames the reported lag is the median of
# A sample every 0.1 s fills CALIBRATION_FRAMES within ten seconds of streaming.
CALIBRATION_EVERY_S = 0.1
# Samples are kept for the whole stream: a larger frame is kept shrunk to this long side (no model input is
# larger), so a 4K camera's samples take a few hundred MB, not gigabytes.
CALIBRATION_MAX_SIDE = 1280
FPS_WINDOW_S = 2.0  # seconds of arrivals the measured fps counts
FPS_SETTLE_S = 2.0  # seconds after connecting before it counts them
FIRST_RETRY_S = 0.5


@dataclass(frozen=True)
class LiveFrame(Frame):
    """A frame from a live source, stamped (perf_counter) when the reader got it."""

    captured: float = 0.0
    placeholder: bool = False


IDLE_COUNTERS = {"state": "idle", "attempt": 0, "lag_ms": None, "drops": 0, "frames": 0, "reconnects": 0}


def _shrunk(image: np.ndarray, max_side: int) -> np.ndarray:
    """The image, scaled down (keeping its shape) when its long side is over max_side."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    return cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class LiveOptions:
    """What a live source is told at start-up (--camera, --source-timeout, --source-backoff-max): the config's
    defaults, so a source built without options behaves as a server started without flags."""

    camera: str = Config.camera  # the --camera command; "camera" names it as a source
    timeout_s: float = Config.source_timeout  # to open, or to stay silent before it is reopened
    backoff_max_s: float = Config.source_backoff_max  # the longest wait between reconnect attempts


# -- the live source the stream producer reads from -----------------------------------------------
@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before reconnect attempt n: first, doubling, at most cap."""

    first: float = FIRST_RETRY_S
    cap: float = LiveOptions.backoff_max_s

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.first * 2 ** max(0, attempt - 1))


class LiveSource:
    """Read a live source on its own thread, keeping only the newest frame; reconnect when it fails or stalls.

    A base.Source that paces itself: the camera sets the rate, the producer only takes the newest frame.
    """

    paces_itself = True

    def __init__(
        self,
        spec: SourceSpec,
        info: SourceInfo | None = None,
        stall_s: float = LiveOptions.timeout_s,
        backoff: Backoff | None = None,
        opener: Callable[[SourceSpec, float], Connection | None] = open_connection,
        on_calibration_ready: Callable[[], None] | None = None,
    ):
        self.spec = spec
        self.info = info
        self.loop = True  # a live source has no end to loop at
        self.stall_s = stall_s
        self.backoff = backoff or Backoff()
        self.opener = opener
        self.state = "connecting"
        self.attempt = 0
        self.drops = 0
        self.received = 0
        self.reconnects = 0
        self._cond = threading.Condition()
        self._latest: LiveFrame | None = None
        self._delivered_index = -1
        self._last_placeholder = 0.0
        self._placeholders = 0
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self._arrivals: deque[float] = deque(maxlen=1000)
        self._connected_at = 0.0
        self._samples: deque[np.ndarray] = deque(maxlen=CALIBRATION_FRAMES)
        self._sampled_at = 0.0
        # called once, from the reader thread, when CALIBRATION_FRAMES frames were sampled
        self._on_calibration_ready = on_calibration_ready
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_forever, name="live-source", daemon=True)
        self._thread.start()

    # consumer side ----------------------------------------------------------------------------
    def read(self, timeout: float = 1.0) -> Frame | None:
        """Return the newest frame not yet returned (a placeholder while reconnecting); None once closed;
        raise queue.Empty when nothing new came within timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._stop.is_set():
                latest = self._latest
                if latest is not None and latest.index > self._delivered_index:
                    self._delivered_index = latest.index
                    return latest
                if self.state == "reconnecting" and self._placeholder_due():
                    return self._placeholder()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise queue.Empty
                self._cond.wait(min(remaining, PLACEHOLDER_EVERY_S))
        return None

    def published(self, frame: Frame, published_at: float) -> None:
        """Note that frame reached the viewers at published_at (perf_counter): its age is the server's lag."""
        if isinstance(frame, LiveFrame) and not frame.placeholder:
            self._lags.append(published_at - frame.captured)

    def close(self) -> None:
        """End the attempts and wait (briefly) for the reader thread."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # A read blocked on a silent network source returns by itself within stall_s (FFmpeg's own
        # timeout; a capture cannot be released from another thread); Stop does not wait that long.
        self._thread.join(timeout=CLOSE_WAIT_S)
        with self._cond:  # read() returns None from now on; a stopped stream's source stays shown, not its frame
            self._latest = None
        self._set_state("ended")

    def status(self) -> dict:
        """State and counters for /api/status (the URL masked)."""
        lags = list(self._lags)
        return {
            **describe(self.spec, self.info, self._measured_fps()),
            "state": self.state,
            "attempt": self.attempt,
            "lag_ms": round(statistics.median(lags) * 1000, 1) if lags else None,
            "drops": self.drops,
            "frames": self.received - self._placeholders,
            "reconnects": self.reconnects,
        }

    @property
    def fps(self) -> float:
        """The rate the source sends (measured once settled, else declared); it is shown, never paced against."""
        return self._measured_fps() or (self.info.fps if self.info else DEFAULT_FPS)

    def calibration_frames(self, count: int) -> list[np.ndarray]:
        """The last count frames sampled from the stream (one every CALIBRATION_EVERY_S)."""
        with self._cond:
            return list(self._samples)[-count:]

    @property
    def calibration_ready(self) -> bool:
        """Whether CALIBRATION_FRAMES frames were sampled."""
        return len(self._samples) == CALIBRATION_FRAMES

    def _sample(self, image: np.ndarray, now: float) -> bool:
        """Keep image as a calibration sample when one is due; True when the samples just became complete."""
        if now - self._sampled_at < CALIBRATION_EVERY_S:
            return False
        self._sampled_at = now
        self._samples.append(_shrunk(image, CALIBRATION_MAX_SIDE))
        return len(self._samples) == CALIBRATION_FRAMES and self._on_calibration_ready is not None

    def _measured_fps(self) -> float | None:
        """Frames per second the source really sends (a camera's declared rate is often wrong), once the
        burst of buffered frames a new connection delivers has passed."""
        now = time.monotonic()
        if self.state != "live" or now - self._connected_at < FPS_SETTLE_S + FPS_WINDOW_S:
            return None
        arrivals = list(self._arrivals)  # one C-level copy: iterating the deque itself races the reader
        recent = [t for t in arrivals if t >= now - FPS_WINDOW_S]
        return round(len(recent) / FPS_WINDOW_S, 1) if recent else None

    def _placeholder_due(self) -> bool:
        return time.monotonic() - self._last_placeholder >= PLACEHOLDER_EVERY_S

    def _placeholder(self) -> LiveFrame:
        """A dark frame saying what is happening; position 0 so the producer resets its tracks."""
        self._last_placeholder = time.monotonic()
        width, height = (self.info.width, self.info.height) if self.info else (640, 480)
        image = np.full((height, width, 3), 24, np.uint8)
        text = f"reconnecting to {self.spec.kind} source (attempt {self.attempt})"
        scale = max(0.5, width / 1100)
        cv2.putText(image, text, (20, height // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (220, 220, 220), 1, cv2.LINE_AA)
        # a placeholder takes the next index, so a real frame after it is still "newer"
        self.received += 1
        self._placeholders += 1
        self._delivered_index = self.received
        return LiveFrame(
            index=self.received, image=image, decode_ms=0.0, position=0, captured=time.perf_counter(), placeholder=True
        )

    # reader side ------------------------------------------------------------------------------
    def _set_state(self, state: str, attempt: int | None = None) -> None:
        with self._cond:
            changed = state != self.state
            self.state = state
            if attempt is not None:
                self.attempt = attempt
            self._cond.notify_all()
        if changed:
            logger.info("%s source %s: %s", self.spec.kind, self.spec.label, state)

    def _read_forever(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                connection = self.opener(self.spec, self.stall_s)
                if connection is not None:
                    got_frames = self._read_connection(connection)
                    if got_frames:
                        attempt = 0
                if self._stop.is_set():
                    break
                attempt += 1
                self.reconnects += 1
                self._set_state("reconnecting", attempt)
                delay = self.backoff.delay(attempt)
                logger.warning("%s failed or stalled; reconnect attempt %d in %.1f s", self.spec.label, attempt, delay)
                self._stop.wait(delay)
        except Exception:  # the stream must say it ended, not hang on a dead reader
            logger.exception("reading %s failed", self.spec.label)
        finally:
            self._set_state("ended")

    def _read_connection(self, connection: Connection) -> bool:
        """Read frames until the stream fails, stalls or close() is called; True if any frame came."""
        position = 0
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                image = connection.read()
                if image is None:
                    return position > 0
                decode_ms = (time.perf_counter() - started) * 1000
                self._offer(image, decode_ms, position, connection.fps)
                position += 1
            return position > 0
        finally:
            connection.close()

    def _offer(self, image: np.ndarray, decode_ms: float, position: int, fps: float) -> None:
        """Make image the newest frame; an unread older one counts as dropped."""
        with self._cond:
            if self._stop.is_set():  # a read that returned after close (a slow network): nobody will read it
                return
            unread = self._latest is not None and self._latest.index > self._delivered_index
            if unread:
                self.drops += 1
                if self._latest.position == 0:
                    position = 0  # the consumer must still see that a new connection began (tracks reset)
            self.received += 1
            now = time.monotonic()
            if position == 0:
                self._connected_at = now
            self._arrivals.append(now)
            self._latest = LiveFrame(
                index=self.received, image=image, decode_ms=decode_ms, position=position, captured=time.perf_counter()
            )
            height, width = image.shape[:2]
            if self.info is None or (self.info.width, self.info.height) != (width, height):
                self.info = SourceInfo(width, height, round(fps or DEFAULT_FPS, 3))
            if self.state != "live":
                self.attempt = 0
            calibration_ready = self._sample(image, now)
            self._cond.notify_all()
        if self.state != "live":
            self._set_state("live", 0)
        if calibration_ready:
            on_ready, self._on_calibration_ready = self._on_calibration_ready, None
            on_ready()
