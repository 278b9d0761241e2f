"""Give the memory that something big just freed back to the system: a replaced detector, an ended tuning.

glibc's malloc keeps freed memory in its arenas (one per thread that allocated, up to eight per core) for reuse:
the session, activations and frames of a detector that was replaced stay resident after Python and ONNX Runtime
let go of them. Every settings change loads a session, every Start makes new threads and the tuning loads a dozen
sessions, so without a trim the resident size climbs while the memory in use stays flat (issue 28: 303 MB after
30 s, 699 MB after 12 minutes of settings churn). malloc_trim(0) returns every arena's free pages; it takes tens of
milliseconds, so it runs when a detector or a tuning ends, never per frame. Elsewhere than glibc (musl,
macOS) there is no malloc_trim and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory(why: str) -> None:
    """Return the free pages of every malloc arena to the system (why: what was just dropped, for the log)."""
    trim = _malloc_trim()
    if trim is None:
        return
    started = time.perf_counter()
    trim(0)
    logger.debug("returned freed memory to the system after %s (%.0f ms)", why, (time.perf_counter() - started) * 1e3)
