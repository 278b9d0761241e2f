"""Live sources: RTSP, HTTP MJPEG/HLS, V4L2 webcams and a camera command, read for the newest frame.

A live source is read on its own thread that keeps only the latest frame: when the stream produces frames
faster than the detector consumes them, older frames are dropped (and counted) instead of queueing, so the
lag from camera to browser cannot grow. When a source fails or stalls it is reopened with capped
exponential backoff; meanwhile the consumer gets a "reconnecting" placeholder about once a second so viewers
stay connected and see why nothing moves.

Credentials in a URL (rtsp://user:password@camera/...) are used only to open the stream: everything that is
logged or shown goes through SourceSpec.label, which masks the password.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import shlex
import signal
import stat
import statistics
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from server.vision.mjpeg import JpegSplitter
from server.vision.video import DEFAULT_FPS, Frame

logger = logging.getLogger(__name__)

V4L2_PATH = re.compile(r"/dev/video\d{1,3}")
URL_KINDS = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http"}
CAMERA_URL = "camera"
STATES = ("connecting", "live", "reconnecting", "ended")
PLACEHOLDER_EVERY_S = 1.0
CLOSE_WAIT_S = 1.0
MAX_BEHIND_S = 2.0  # an RTSP reader this far behind the camera's own clock reconnects
LAG_WINDOW = 100  # frames the reported lag is the median of
CALIBRATION_SAMPLES = 36  # frames kept for int8 tuning when there is no video file to sample
CALIBRATION_EVERY_S = 0.25
FPS_WINDOW_S = 2.0  # seconds of arrivals the measured fps counts
FPS_SETTLE_S = 2.0  # seconds after connecting before it counts them


class SourceRejected(ValueError):
    """The source cannot be used: unknown kind, missing device, or unreachable (HTTP 400)."""


@dataclass(frozen=True)
class SourceSpec:
    """What to open (target, which may hold credentials) and how to name it in logs and status (label)."""

    kind: str  # rtsp | http | hls | v4l2 | camera
    target: str
    label: str

    def __repr__(self) -> str:  # never let a password reach a log through repr()
        return f"SourceSpec(kind={self.kind!r}, label={self.label!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class SourceInfo:
    width: int
    height: int
    fps: float


@dataclass(frozen=True)
class LiveFrame(Frame):
    """A frame from a live source, stamped (perf_counter) when the reader got it."""

    captured: float = 0.0
    placeholder: bool = False


def redact(url: str) -> str:
    """Return url with any password replaced by ***; the user name stays so the owner recognises it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    # A lone user part may itself be the secret (an API token): mask it too.
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if has_password and user else f"***@{host}"))


def parse_source(text: str, camera_command: str = "") -> SourceSpec:
    """Check what the user typed and say which kind of source it is; raise SourceRejected otherwise."""
    text = (text or "").strip()
    if not text:
        raise SourceRejected("send {\"url\": ...}: an rtsp://, rtsps://, http(s):// (MJPEG or HLS) URL or /dev/videoN")
    if text == CAMERA_URL:
        if not camera_command:
            raise SourceRejected("no camera command is configured: start the server with --camera CMD")
        return SourceSpec("camera", camera_command, "camera command")
    if text.startswith("/"):
        return _device_spec(text)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme not in URL_KINDS:
        shown = f"scheme '{scheme}'" if scheme else f"'{text[:80]}'"
        raise SourceRejected(
            f"unsupported source {shown}: use rtsp://, rtsps://, http(s):// (MJPEG or HLS) or /dev/videoN"
        )
    parts = urlsplit(text)
    if not parts.hostname:
        raise SourceRejected(f"the URL {redact(text)} has no host")
    kind = URL_KINDS[scheme]
    if kind == "http" and parts.path.lower().endswith(".m3u8"):
        kind = "hls"
    return SourceSpec(kind, text, redact(text))


def _device_spec(path: str) -> SourceSpec:
    """Accept /dev/videoN only (no other local path is ever opened), and only if it is a device."""
    if not V4L2_PATH.fullmatch(path):
        raise SourceRejected(f"local path {path[:80]} is not a camera: only /dev/videoN devices are accepted")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SourceRejected(f"no such camera device {path}: is the webcam plugged in (tried to open it with V4L2)?")
    except OSError as exc:
        raise SourceRejected(f"cannot open {path} ({exc.strerror}): tried V4L2")
    if not stat.S_ISCHR(mode):
        raise SourceRejected(f"{path} is not a character device: tried to open it as a V4L2 camera")
    return SourceSpec("v4l2", path, path)


# -- connections: one open stream, read frame by frame --------------------------------------------
class Connection(Protocol):
    fps: float

    def read(self) -> np.ndarray | None:
        """Return the next image, or None when the stream failed or stalled."""

    def close(self) -> None: ...


class CaptureConnection:
    """An OpenCV capture (FFmpeg for network streams, V4L2 for webcams) with bounded open and read waits."""

    def __init__(self, spec: SourceSpec, timeout_s: float, max_behind_s: float = MAX_BEHIND_S):
        self.label = spec.label
        self.capture = _open_capture(spec, timeout_s)
        self.fps = _sane_fps(self.capture.get(cv2.CAP_PROP_FPS)) if self.capture else 0.0
        # RTP gives RTSP frames real timestamps; other streams' are often made up from a nominal fps.
        self.max_behind_s = max_behind_s if spec.kind == "rtsp" else None
        self._best_gap: float | None = None

    @property
    def opened(self) -> bool:
        return self.capture is not None

    def read(self) -> np.ndarray | None:
        ok, image = self.capture.read()
        if not ok or image is None or self._fell_behind():
            return None
        return image

    def _fell_behind(self) -> bool:
        """True once frames arrive max_behind_s later, against their own timestamps, than they did at best.

        Keeping only the newest decoded frame cannot help when decoding itself is slower than the camera:
        the backlog then waits in FFmpeg's and the socket's buffers and the lag grows. Reopening drops it.
        """
        if self.max_behind_s is None:
            return False
        pts_s = self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
        if pts_s <= 0:
            return False
        gap = time.monotonic() - pts_s
        if self._best_gap is None or gap < self._best_gap:
            self._best_gap = gap
            return False
        behind = gap - self._best_gap
        if behind > self.max_behind_s:
            logger.warning("%s: decoding fell %.1f s behind the camera; reconnecting to catch up", self.label, behind)
            return True
        return False

    def close(self) -> None:
        self.capture.release()


def _sane_fps(fps: float) -> float:
    return float(fps) if 0 < fps <= 240 else DEFAULT_FPS


def _open_capture(spec: SourceSpec, timeout_s: float) -> cv2.VideoCapture | None:
    if spec.kind == "v4l2":
        capture = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
        if capture.isOpened():
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's queue would add frames of lag
    else:
        # The FFmpeg backend by name: it honours these timeouts, so a camera that accepts the connection and
        # then says nothing cannot hang the probe or the reader (and no other backend gets to try the URL).
        wait_ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, wait_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, wait_ms]
        capture = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
    if capture.isOpened():
        return capture
    capture.release()
    return None


class CommandConnection:
    """A child process whose stdout is an MJPEG stream (concatenated JPEGs), cut at JPEG SOI/EOI markers."""

    def __init__(self, spec: SourceSpec, timeout_s: float):
        self.timeout_s = timeout_s
        self.fps = 0.0
        self._splitter = JpegSplitter()
        try:
            self.process = subprocess.Popen(
                shlex.split(spec.target),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # so close() can end the whole process group
            )
        except OSError as exc:
            logger.warning("camera command failed to start: %s", exc)
            self.process = None

    @property
    def opened(self) -> bool:
        return self.process is not None

    def read(self) -> np.ndarray | None:
        while True:
            jpeg = self._splitter.next_jpeg()
            if jpeg is not None:
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                if image is not None:
                    return image
                continue  # a damaged frame: skip it
            if not self._fill():
                return None

    def _fill(self) -> bool:
        """Read more of stdout; False when the command ended or wrote nothing for timeout_s (a stall)."""
        stdout = self.process.stdout
        ready, _, _ = select.select([stdout], [], [], self.timeout_s)
        if not ready:
            return False
        chunk = os.read(stdout.fileno(), 1 << 16)
        self._splitter.feed(chunk)
        return bool(chunk)

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=2)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        finally:
            self.process.stdout.close()


def open_connection(spec: SourceSpec, timeout_s: float) -> Connection | None:
    """Open the stream; None when it cannot be opened within timeout_s."""
    connection = CommandConnection(spec, timeout_s) if spec.kind == "camera" else CaptureConnection(spec, timeout_s)
    return connection if connection.opened else None


def probe_source(spec: SourceSpec, timeout_s: float) -> SourceInfo:
    """Open the source and decode one frame within about timeout_s; raise SourceRejected saying what was tried."""
    started = time.monotonic()
    connection = open_connection(spec, timeout_s)
    if connection is None:
        raise SourceRejected(f"cannot open {spec.label}: tried {_how(spec)} for up to {timeout_s:.0f} s")
    try:
        image = connection.read()
        if image is None:
            raise SourceRejected(
                f"{spec.label} opened but sent no frame within {timeout_s:.0f} s (tried {_how(spec)})"
            )
        height, width = image.shape[:2]
        logger.info("probed %s: %dx%d in %.1f s", spec.label, width, height, time.monotonic() - started)
        return SourceInfo(width, height, round(connection.fps or DEFAULT_FPS, 3))
    finally:
        connection.close()


def _how(spec: SourceSpec) -> str:
    return {
        "rtsp": "RTSP with FFmpeg",
        "http": "HTTP (MJPEG) with FFmpeg",
        "hls": "HLS with FFmpeg",
        "v4l2": "the V4L2 device",
        "camera": "the camera command (MJPEG on stdout)",
    }[spec.kind]


def describe(spec: SourceSpec, info: SourceInfo | None, measured_fps: float | None = None) -> dict:
    """What status shows of a source before its counters: kind, masked URL, geometry, fps."""
    return {
        "kind": spec.kind,
        "url": spec.label,
        "width": info.width if info else None,
        "height": info.height if info else None,
        "fps": measured_fps or (info.fps if info else None),
    }


IDLE_COUNTERS = {"state": "idle", "attempt": 0, "lag_ms": None, "drops": 0, "frames": 0, "reconnects": 0}


# -- the live source the stream producer reads from -----------------------------------------------
@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before reconnect attempt n: first, doubling, at most cap."""

    first: float = 0.5
    cap: float = 4.0

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.first * 2 ** max(0, attempt - 1))


class LiveSource:
    """Read a live source on its own thread, keeping only the newest frame; reconnect when it fails or stalls.

    Same narrow interface as video.FrameSource: read(timeout) -> Frame | None, close(), a loop attribute.
    """

    def __init__(
        self,
        spec: SourceSpec,
        info: SourceInfo | None = None,
        stall_s: float = 5.0,
        backoff: Backoff = Backoff(),
        opener: Callable[[SourceSpec, float], Connection | None] = open_connection,
        on_samples: Callable[[], None] | None = None,
    ):
        self.spec = spec
        self.info = info
        self.loop = True  # a live source has no end to loop at; kept for FrameSource's interface
        self.stall_s = stall_s
        self.backoff = backoff
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
        self._samples: deque[np.ndarray] = deque(maxlen=CALIBRATION_SAMPLES)
        self._sampled_at = 0.0
        self._on_samples = on_samples  # called once, from the reader thread, when enough frames were sampled
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

    def samples(self) -> list[np.ndarray]:
        """Frames sampled across the stream so far (every CALIBRATION_EVERY_S), for int8 calibration."""
        with self._cond:
            return list(self._samples)

    def _sample(self, image: np.ndarray, now: float) -> bool:
        """Keep image as a calibration sample when one is due; True when the samples just became complete."""
        if now - self._sampled_at < CALIBRATION_EVERY_S:
            return False
        self._sampled_at = now
        self._samples.append(image)
        return len(self._samples) == CALIBRATION_SAMPLES and self._on_samples is not None

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
            samples_complete = self._sample(image, now)
            self._cond.notify_all()
        if self.state != "live":
            self._set_state("live", 0)
        if samples_complete:
            on_samples, self._on_samples = self._on_samples, None
            on_samples()
