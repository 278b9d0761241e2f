"""Video files: probing an upload, sampling it for calibration, and a source that decodes ahead on its own thread."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from server.vision.sources.base import Frame, sane_fps

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
PUT_POLL_S = 0.1
CLOSE_JOIN_S = 2.0


class VideoUnreadable(ValueError):
    """The file is not a video OpenCV can decode."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int


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
        fps = sane_fps(capture.get(cv2.CAP_PROP_FPS))
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if frames <= 0:  # some containers do not store a count: count by demuxing
            frames = 1 + _count_frames(capture)
        return VideoInfo(width=width, height=height, fps=round(fps, 3), frames=frames)
    finally:
        capture.release()


def sample_frames(video_path: str | Path, count: int) -> list[np.ndarray]:
    """Decode up to count frames spread evenly over a video."""
    capture = cv2.VideoCapture(str(video_path))
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(np.linspace(0, max(total - 1, 0), count).round().astype(int)) if total > 0 else None
        frames, index = [], 0
        while len(frames) < count:
            if not capture.grab():
                break
            if wanted is None or index in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    frames.append(frame)
            index += 1
        return frames
    finally:
        capture.release()


class FrameSource:
    """Decode a video on a background thread, keeping a few frames ready for the consumer; paced by its fps."""

    paces_itself = False  # a file plays as fast as it decodes unless the producer paces it

    def __init__(self, path: str | Path, loop: bool = True, ahead: int = 3):
        self.path = str(path)
        self.loop = loop
        capture = cv2.VideoCapture(self.path)
        self.fps = sane_fps(capture.get(cv2.CAP_PROP_FPS))
        self._frames: queue.Queue[Frame | None] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode_all, args=(capture,), name="frame-source", daemon=True)
        self._thread.start()

    def _decode_all(self, capture: cv2.VideoCapture) -> None:
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
                self._frames.put(item, timeout=PUT_POLL_S)
                return
            except queue.Full:
                continue

    def read(self, timeout: float = 1.0) -> Frame | None:
        """Return the next frame; None at the end of the video or when closed; raise queue.Empty on timeout."""
        if self._stop.is_set():
            return None
        return self._frames.get(timeout=timeout)

    def published(self, frame: Frame, published_at: float) -> None:
        """A file has no lag to measure."""

    def status(self) -> dict:
        return {"kind": "file", "url": Path(self.path).name, "fps": self.fps}

    def calibration_frames(self, count: int) -> list[np.ndarray]:
        """Frames spread across the whole video (decoded apart from the stream)."""
        return sample_frames(self.path, count)

    def close(self) -> None:
        """Stop decoding, wait for the decoder thread and drop the frames it decoded ahead: nobody reads them now."""
        self._stop.set()
        self._thread.join(timeout=CLOSE_JOIN_S)
        with contextlib.suppress(queue.Empty):
            while True:
                self._frames.get_nowait()
