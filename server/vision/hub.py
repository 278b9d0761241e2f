"""The latest-frame hub every viewer of a stream shares: one JPEG published, any number of readers."""

from __future__ import annotations

import threading
from typing import Iterator

from server.vision import mjpeg

VIEWER_POLL_S = 0.25


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
