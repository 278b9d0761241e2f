"""Free space on the uploads disk: every write checks it first, and a full disk is a 507, never a half-written file.

The fault answered here: a Raspberry Pi's SD card is small and shared with the system. An upload, a conversion,
an int8 build or an export that fills it leaves a half-written file, can break the next writes (and the system's
own logs) and must never replace what was stored before. So each write asks `DiskSpace.require(needed)` before
it starts (free space minus a reserve, refused with InsufficientStorage, HTTP 507), and runs under
`DiskSpace.guard(needed)`, which turns an ENOSPC that still happens (an estimate too low, another process
writing) into the same InsufficientStorage once the writer's own cleanup has removed its temporary file.

The writers themselves (atomic writes: a temporary name in the target's folder, then os.replace) own their
temporary files; this module never decides what to delete, it only measures and translates.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)

MB = 1024 * 1024
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class InsufficientStorage(Exception):
    """Not enough free space for a write (HTTP 507); the message gives the numbers and what to do."""

    def __init__(self, free_bytes: int, needed_bytes: int, reserve_bytes: int):
        self.free_bytes, self.needed_bytes, self.reserve_bytes = free_bytes, needed_bytes, reserve_bytes
        super().__init__(
            f"not enough free space: {_mb(free_bytes, math.floor)} MB free, "
            f"{_mb(needed_bytes + reserve_bytes, math.ceil)} MB needed (including a "
            f"{_mb(reserve_bytes, math.ceil)} MB reserve); delete uploads with Reset or free space on the device"
        )


def _mb(count: int, rounding) -> str:
    """Whole MB, rounded the cautious way (free down, needed up), with one decimal below 10 MB."""
    value = max(0, count) / MB
    if value < 10:
        return f"{rounding(value * 10) / 10:.1f}"
    return str(int(rounding(value)))


def is_disk_full(exc: BaseException) -> bool:
    """True for the OSError a write gets when the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing parent (statvfs needs something that exists)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def same_disk(first: str | Path, second: str | Path) -> bool:
    """True when both paths live on one filesystem, so their writes share its free space."""
    return os.stat(_existing(Path(first))).st_dev == os.stat(_existing(Path(second))).st_dev


def folder_bytes(folder: Path) -> int:
    """Bytes the files under folder take on disk (blocks, as df counts them; a file with two names counts once)."""
    total, seen = 0, set()
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                status = os.lstat(os.path.join(root, name))
            except OSError:  # removed meanwhile (a request finished, a reset)
                continue
            if (status.st_dev, status.st_ino) not in seen:  # an .onnx upload is also linked into the cache
                seen.add((status.st_dev, status.st_ino))
                total += status.st_blocks * 512
    return total


@dataclass(frozen=True)
class DiskSpace:
    """The free space of the disk that holds folder, less a reserve every write leaves alone."""

    folder: Path
    reserve_bytes: int

    def free_bytes(self) -> int:
        """Bytes an unprivileged process may still write on the folder's filesystem (statvfs f_bavail)."""
        return shutil.disk_usage(_existing(self.folder)).free

    def require(self, needed_bytes: int) -> None:
        """Raise InsufficientStorage unless needed_bytes fit with the reserve left over."""
        free = self.free_bytes()
        if needed_bytes + self.reserve_bytes > free:
            logger.warning("refused a write of %d bytes: %d free, reserve %d", needed_bytes, free, self.reserve_bytes)
            raise InsufficientStorage(free, needed_bytes, self.reserve_bytes)

    def full(self, needed_bytes: int) -> InsufficientStorage:
        """The error for a write that hit ENOSPC, with the free space as it is now (after its cleanup)."""
        return InsufficientStorage(self.free_bytes(), needed_bytes, self.reserve_bytes)

    @contextlib.contextmanager
    def guard(self, needed_bytes: int, low_bytes: int = 0) -> Iterator[None]:
        """Run a write whose ENOSPC becomes InsufficientStorage (the writer removes its own temporary file).

        With low_bytes, any failure while fewer than low_bytes are left above the reserve counts as a full disk
        too: some writers (onnx's C++ shape inference) do not report ENOSPC, they leave a truncated file that
        the next step then fails to parse.
        """
        try:
            yield
        except InsufficientStorage:
            raise
        except Exception as exc:
            low = low_bytes > 0 and self.free_bytes() - self.reserve_bytes < low_bytes
            if not (is_disk_full(exc) or low):
                raise
            logger.warning("the disk filled during a write of about %d bytes (%s)", needed_bytes, exc)
            raise self.full(needed_bytes) from None

    def status(self) -> dict:
        """Free space, the reserve and what the folder holds, for /api/status."""
        return {
            "free_bytes": self.free_bytes(),
            "reserve_bytes": self.reserve_bytes,
            "folder_bytes": folder_bytes(self.folder),
        }
