"""What every backend answers (Backend) and what runs (EngineRun): the registry's shared types."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from server.vision.engines import Engine, EngineKey

Progress = Callable[[str, float, str], None]  # (stage, 0..1, message), as the engine timing reports


@dataclass(frozen=True)
class EngineRun:
    """What runs: an engine at a precision and thread count, and the model file it loads as that file is now.

    The file's stamp (its modification time in ns; None when unreadable) is part of the value, so an int8 model
    made again in place (re-tuned, calibrated on new frames) is another run: nothing cached for the old file is
    reused. Frozen and hashable: ModelRuntime caches warmed-up detectors by it.
    """

    engine: str
    precision: str
    threads: int
    model: Path
    stamp: int | None

    @property
    def key(self) -> EngineKey:
        return EngineKey(self.engine, self.precision, self.threads)


def stamp_of(path: Path) -> int | None:
    """The file's modification time in ns, None when it is gone (a reset deleting it meanwhile)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class Backend(Protocol):
    """One engine's answers for one model."""

    name: str  # the engine's name in settings, status and reports
    precisions: tuple[str, ...]  # what the engine can run at all

    def unavailable(self) -> str | None:
        """Why this model cannot run on the engine at all, None when it can."""
        ...

    def offered(self) -> list[str]:
        """The precisions a user may choose for this model (one may still be waiting to be made: ready)."""
        ...

    def ready(self, precision: str) -> bool:
        """Whether precision can be loaded now (its files exist)."""
        ...

    def model_file(self, precision: str) -> tuple[Path, int | None]:
        """The file precision loads and its stamp (precision must be ready)."""
        ...

    def load(self, run: EngineRun) -> Engine:
        """Load the engine of run (not warmed up)."""
        ...

    def prepare(self, tensors: list[np.ndarray], threads: int, progress: Progress,
                cancel: threading.Event | None) -> None:
        """Make what the engine builds from calibration frames before it is timed (raise Cancelled on cancel)."""
        ...


class Cancelled(Exception):
    """A backend's prepare saw its cancel event set."""
