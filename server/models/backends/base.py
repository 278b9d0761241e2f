"""What every backend answers (Backend) and what runs (EngineRun): the registry's shared types."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from server.vision.engines import Engine, EngineKey

Progress = Callable[[str, float, str], None]  # (stage, 0..1, message), as the engine timing reports


class EngineRun(NamedTuple):
    """What runs: an engine at a precision and thread count, and the model file it loads as that file is now.

    The file's stamp (its modification time in ns, for a file made again in place: an int8 model re-tuned or
    calibrated on new frames; None for a file that never changes under a runtime) is part of the value, so a
    remade file is another run: nothing cached for the old one is reused. A NamedTuple, not a dataclass: the
    producer asks for one every frame and ModelRuntime looks it up by hash, which a tuple does in C.
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
