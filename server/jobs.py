"""Progress of long work (conversion, quantization) for the status endpoint."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass
class Job:
    kind: str
    stage: str = "starting"
    progress: float = 0.0
    message: str = ""


class JobBoard:
    """The jobs in progress, at most one per kind; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def begin(self, kind: str, message: str = "") -> bool:
        """Register a job; return False when one of that kind is already running."""
        with self._lock:
            if kind in self._jobs:
                return False
            self._jobs[kind] = Job(kind, message=message)
            return True

    def update(self, kind: str, stage: str, progress: float, message: str = "") -> None:
        with self._lock:
            if kind in self._jobs:
                self._jobs[kind] = Job(kind, stage, max(0.0, min(1.0, progress)), message)

    def end(self, kind: str) -> None:
        with self._lock:
            self._jobs.pop(kind, None)

    def running(self, kind: str) -> bool:
        with self._lock:
            return kind in self._jobs

    def current(self) -> dict | None:
        """Return the most recently started job as a dict, or None."""
        with self._lock:
            jobs = list(self._jobs.values())
        return asdict(jobs[-1]) if jobs else None
