"""A real small disk for storage faults: a tmpfs mounted under the test's folder (the tests run as root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

MB = 1024 * 1024
FILLER = "filler.bin"  # beside the uploads folder, on the same disk: another program's file


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size_mb: int) -> Iterator[Path]:
    """Mount a tmpfs of size_mb at folder for the length of the block; unmount it after."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.fail("the small-disk tests mount a tmpfs: run them as root")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        # A file still open on it (the leak these tests look for) makes a plain umount fail: detach it then.
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def fill(disk: Path, leave_bytes: int) -> Path:
    """Write a filler file on disk so that only about leave_bytes stay free; return it."""
    filler = disk / FILLER
    size = max(0, free_bytes(disk) - leave_bytes)
    with filler.open("ab") as handle:
        chunk = b"\0" * MB
        while size > 0:
            handle.write(chunk[: min(size, MB)])
            size -= min(size, MB)
    return filler


def every_file(folder: Path) -> list[str]:
    """Every file under folder, hidden ones included, relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
