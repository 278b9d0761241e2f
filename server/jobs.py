"""Progress of long work (conversion, quantization) for the status endpoint."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass

ETA_MIN_PROGRESS = 0.03  # below this, elapsed / progress says nothing yet
ETA_MIN_SECONDS = 1.0

logger = logging.getLogger(__name__)


@dataclass
class Job:
    kind: str
    stage: str = "starting"
    progress: float = 0.0
    message: str = ""
    eta_s: float | None = None  # seconds left, extrapolated from the progress so far (None until it means something)


def eta_seconds(elapsed: float, progress: float) -> float | None:
    """Return the time left if the rest goes as fast as what is done, or None when too little is done."""
    if progress < ETA_MIN_PROGRESS or elapsed < ETA_MIN_SECONDS:
        return None
    return round(max(0.0, elapsed * (1.0 - progress) / progress), 1)


class JobBoard:
    """The jobs in progress, at most one per kind; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._started: dict[str, float] = {}

    def begin(self, kind: str, message: str = "") -> bool:
        """Register a job; return False when one of that kind is already running."""
        with self._lock:
            if kind in self._jobs:
                return False
            self._jobs[kind] = Job(kind, message=message)
            self._started[kind] = time.monotonic()
            return True

    def update(self, kind: str, stage: str, progress: float, message: str = "") -> None:
        with self._lock:
            if kind in self._jobs:
                progress = max(0.0, min(1.0, progress))
                eta = eta_seconds(time.monotonic() - self._started[kind], progress)
                self._jobs[kind] = Job(kind, stage, progress, message, eta)

    def end(self, kind: str) -> None:
        with self._lock:
            self._jobs.pop(kind, None)
            self._started.pop(kind, None)

    def running(self, kind: str) -> bool:
        with self._lock:
            return kind in self._jobs

    def current(self) -> dict | None:
        """Return the most recently started job as a dict, or None."""
        with self._lock:
            jobs = list(self._jobs.values())
        return asdict(jobs[-1]) if jobs else None


def join_worker(thread: threading.Thread | None, timeout: float, what: str) -> bool:
    """Wait for a background worker that was asked to stop; False (and a warning) if it is still running after timeout.

    A worker asking for its own end (thread is the current one) does not wait for itself.
    """
    if thread is None or thread is threading.current_thread():
        return True
    thread.join(timeout)
    if thread.is_alive():
        logger.warning("%s did not stop within %.0f s", what, timeout)
        return False
    return True
