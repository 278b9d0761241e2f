"""Connections: one open live stream (OpenCV capture or the camera command), read frame by frame; probing."""

from __future__ import annotations

import logging
import time
from typing import Protocol

import cv2
import numpy as np

from server.vision.sources.base import DEFAULT_FPS, sane_fps
from server.vision.sources.camera import CommandConnection
from server.vision.sources.spec import SourceInfo, SourceRejected, SourceSpec

logger = logging.getLogger(__name__)

MAX_BEHIND_S = 2.0  # an RTSP reader this far behind the camera's own clock reconnects


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
        self.fps = sane_fps(self.capture.get(cv2.CAP_PROP_FPS)) if self.capture else 0.0
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
