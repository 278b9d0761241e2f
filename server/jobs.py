"""Long work in the background: its progress for the status endpoint (JobBoard) and its thread (Worker)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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


class Worker:
    """One background thread at a time with its own stop event: started, asked to stop and joined in one way.

    What runs on it (a job such as the engine timing or the export, an output's sender) is target(*args, stop):
    it checks stop (or waits on it) between steps and returns once it is set. stop() sets the event and joins, so
    whoever replaces or deletes the files a worker reads can first make sure it is gone. A thread that sleeps on
    something else than the stop event (an output's queue) is woken by wake() once the event is set.
    """

    def __init__(self, name: str, what: str | None = None, wake: Callable[[], None] | None = None):
        self.name = name  # the thread's name, as traces and py-spy show it
        self.what = what or name  # how the log names it when it does not stop in time
        self._wake = wake
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, target: Callable[..., None], *args) -> threading.Event:
        """Run target(*args, stop) on a new daemon thread; return its stop event. Raise if one is still running."""
        with self._lock:
            if self.running():
                raise RuntimeError(f"{self.what} is already running")
            self._stop = threading.Event()
            self._thread = threading.Thread(target=target, args=(*args, self._stop), name=self.name, daemon=True)
            self._thread.start()
            return self._stop

    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def stopping(self) -> bool:
        """Whether the running (or last) thread was asked to stop."""
        return self._stop.is_set()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to stop and wait for it; False (and a warning) if it is still running after timeout."""
        with self._lock:
            thread = self._thread
            self._stop.set()
        if self._wake is not None:
            self._wake()
        return join_worker(thread, timeout, self.what)
