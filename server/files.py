"""Files the server writes: the one atomic-write helper, its temporary-name scheme, and content hashes.

Outside the web -> models -> vision layers on purpose, like config.py: every layer writes files, so every
layer may import this. A file is written under a hidden temporary name in the target's own folder (so the
final rename never crosses a filesystem), flushed to disk, then renamed over the target; on any exception
the temporary file is removed. After a crash mid-write the target is the old file or the new one, never a
mix, and the leftover matches TEMPORARY_PATTERN, which start-up cleanup (server.web.recovery) deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PARTIAL_SUFFIX = ".partial"
TEMPORARY_PATTERN = f".*{PARTIAL_SUFFIX}"  # every name temporary_name_for makes, for a glob


def temporary_name_for(target: Path) -> Path:
    """Return a fresh hidden name beside target to write it under (unique per process and call)."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def atomic_write(target: str | Path) -> Iterator[IO[bytes]]:
    """Yield a binary file that becomes target, whole, when the block ends without an exception.

    The one place where files are written in place of others: a check of free space before the write and
    the translation of a full disk into a clear error belong here.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_name_for(target)
    try:
        with open(partial, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
        _sync_folder(target.parent)
    finally:
        partial.unlink(missing_ok=True)


def write_bytes(target: str | Path, data: bytes) -> None:
    """Write data to target atomically."""
    with atomic_write(target) as handle:
        handle.write(data)


def write_text(target: str | Path, text: str) -> None:
    """Write UTF-8 text to target atomically."""
    write_bytes(target, text.encode("utf-8"))


def copy_file(source: str | Path, target: str | Path) -> None:
    """Copy source to target atomically."""
    with open(source, "rb") as reader, atomic_write(target) as handle:
        shutil.copyfileobj(reader, handle, 1 << 20)


def sha256_of(path: str | Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sync_folder(folder: Path) -> None:
    # The rename lives in the folder's entry list: without this, power loss can forget it.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
