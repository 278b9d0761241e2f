"""File helpers shared by model conversion and int8 tuning: content hashes and atomic writes."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def sha256_of(path: str | Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



def write_atomically(source: Path, target: Path) -> None:
    """Copy source to target under a temporary name in target's folder, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
