"""The --camera command: a child process whose stdout is an MJPEG stream, read as one live connection."""

from __future__ import annotations

import logging
import os
import select
import shlex
import signal
import subprocess

import cv2
import numpy as np

from server.vision.mjpeg import JpegSplitter
from server.vision.sources.spec import SourceSpec

logger = logging.getLogger(__name__)

CLOSE_WAIT_S = 2.0


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
            self.process.wait(timeout=CLOSE_WAIT_S)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        finally:
            self.process.stdout.close()
