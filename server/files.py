"""Files the server writes: the one atomic-write helper, its temporary-name scheme, and content hashes (of a file,
or of one being written: HashingWriter).

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


class HashingWriter:
    """A file being written whose SHA-256 is taken from the bytes as they go in, so nothing reads it back to hash it.

    Everything but write and writelines goes to the wrapped binary file. sha256() is None when the digest may not be
    the file's: a write that did not continue where the previous one ended (a seek back), or a size on disk that is
    not what was written (a truncate, another handle); the caller then hashes the file.
    """

    def __init__(self, file: IO[bytes]):
        self._file = file
        self._digest = hashlib.sha256()
        self._written = 0
        self._in_order = True

    def write(self, data) -> int:
        if self._file.tell() != self._written:
            self._in_order = False
        count = self._file.write(data)
        self._digest.update(memoryview(data)[:count])
        self._written += count
        return count

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def sha256(self) -> str | None:
        """Return the hex SHA-256 of what was written, or None when that may not be the file's content."""
        self._file.flush()
        if not self._in_order or os.fstat(self._file.fileno()).st_size != self._written:
            return None
        return self._digest.hexdigest()

    def __getattr__(self, name: str):
        return getattr(self._file, name)

    def __iter__(self):
        return iter(self._file)

    def __enter__(self) -> "HashingWriter":
        self._file.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._file.__exit__(*exc)


def _sync_folder(folder: Path) -> None:
    # The rename lives in the folder's entry list: without this, power loss can forget it.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
