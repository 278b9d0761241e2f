"""Video files: probing an upload, and a frame source that decodes ahead on its own thread."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_FPS = 25.0


class VideoUnreadable(ValueError):
    """The file is not a video OpenCV can decode."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int


@dataclass(frozen=True)
class Frame:
    """A decoded frame, its place in the stream and in the file, and what decoding it cost."""

    index: int
    image: np.ndarray
    decode_ms: float
    position: int = 0
    decoded_at: float = field(default_factory=time.perf_counter)  # when decoding ended (perf_counter)


def _sane_fps(fps: float) -> float:
    return float(fps) if 0 < fps <= 1000 else DEFAULT_FPS


def _count_frames(capture: cv2.VideoCapture) -> int:
    count = 0
    while capture.grab():
        count += 1
    return count


def probe_video(path: str | Path) -> VideoInfo:
    """Open a video, decode its first frame and return its geometry; raise VideoUnreadable if that fails."""
    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok or frame is None:
            raise VideoUnreadable("the file is not a video this server can decode")
        height, width = frame.shape[:2]
        fps = _sane_fps(capture.get(cv2.CAP_PROP_FPS))
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if frames <= 0:  # some containers do not store a count: count by demuxing
            frames = 1 + _count_frames(capture)
        return VideoInfo(width=width, height=height, fps=round(fps, 3), frames=frames)
    finally:
        capture.release()


class FrameSource:
    """Decode a video on a background thread, keeping a few frames ready for the consumer."""

    def __init__(self, path: str | Path, loop: bool = True, ahead: int = 3):
        self.path = str(path)
        self.loop = loop
        self._frames: queue.Queue[Frame | None] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode_all, name="frame-source", daemon=True)
        self._thread.start()

    def _decode_all(self) -> None:
        capture = cv2.VideoCapture(self.path)
        index = position = 0
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                ok, image = capture.read()
                if not ok:
                    if not self.loop or position == 0:
                        break
                    capture.release()
                    capture = cv2.VideoCapture(self.path)
                    position = 0
                    continue
                elapsed_ms = (time.perf_counter() - started) * 1000
                self._put(Frame(index, image, elapsed_ms, position))
                index, position = index + 1, position + 1
        except Exception:  # a decoder crash must end the stream, not hang it
            logger.exception("decoding %s failed", self.path)
        finally:
            capture.release()
            self._put(None)

    def _put(self, item: Frame | None) -> None:
        while not self._stop.is_set():
            try:
                self._frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, timeout: float = 1.0) -> Frame | None:
        """Return the next frame; None at the end of the video or when closed; raise queue.Empty on timeout."""
        if self._stop.is_set():
            return None
        return self._frames.get(timeout=timeout)

    def close(self) -> None:
        """Stop decoding and wait for the decoder thread."""
        self._stop.set()
        self._thread.join(timeout=2)
