"""The latest JPEG of a running stream, shared by any number of MJPEG viewers."""

from __future__ import annotations

import threading
import time
from typing import Iterator

from server.vision import mjpeg

VIEWER_POLL_S = 0.25


class FrameHub:
    """Hold the latest JPEG; viewers wait for a newer one, so a slow viewer skips frames instead of queueing.

    A viewer may be capped to a frame rate: it then sleeps between frames instead of waking for every
    one the producer makes, so many viewers cost the producer little CPU.
    """

    def __init__(self, max_viewer_fps: float = 0.0):
        self._condition = threading.Condition()
        self._part: bytes | None = None
        self._sequence = 0
        self._closed = False
        self._closed_event = threading.Event()
        self.viewers = 0
        self.max_viewer_fps = max_viewer_fps

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
        self._closed_event.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def published(self) -> int:
        """How many frames were published so far."""
        return self._sequence

    def wait_newer(self, seen: int, timeout: float) -> tuple[int, bytes | None]:
        """Return (sequence, multipart part) newer than seen, or (seen, None) on timeout or when closed with none.

        A frame published just before the hub closed (the last frame of a video that ends) is still handed out.
        """
        with self._condition:
            self._condition.wait_for(lambda: self._closed or self._sequence > seen, timeout)
            if self._sequence <= seen:
                return seen, None
            return self._sequence, self._part

    def _sleep_until(self, moment: float) -> None:
        """Sleep until moment (time.monotonic), waking early when the hub closes.

        On an event of its own, not the frame condition: a capped viewer is not woken by every publish.
        """
        self._closed_event.wait(max(0.0, moment - time.monotonic()))

    def frames(self, max_fps: float | None = None) -> Iterator[bytes]:
        """Yield multipart parts until the hub closes; ends cleanly when the viewer disconnects.

        max_fps caps this viewer's frame rate (default: the hub's max_viewer_fps; 0: no cap).
        """
        with self._condition:
            self.viewers += 1
        cap = self.max_viewer_fps if max_fps is None else max_fps
        interval = 1.0 / cap if cap > 0 else 0.0
        try:
            seen, due = 0, time.monotonic()
            while True:
                if interval and not self._closed:
                    self._sleep_until(due)
                seen, part = self.wait_newer(seen, VIEWER_POLL_S)
                if part is None:
                    if self._closed:
                        return
                    continue
                # The next frame is due one interval after this one was due, so the cap holds on
                # average; after a long wait it restarts from now rather than bursting to catch up.
                due = max(due + interval, time.monotonic() - interval)
                yield part
        finally:
            with self._condition:
                self.viewers -= 1
