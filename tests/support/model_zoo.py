"""Build (or reuse) the test model zoo by running tests/support/build_models.py in a subprocess."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

BUILDER = Path(__file__).resolve().parent / "build_models.py"
BUILD_TIMEOUT = 1800


def builder_id() -> str:
    """Identify what a zoo was built by: the ultralytics version and a hash of build_models.py."""
    digest = hashlib.sha256(BUILDER.read_bytes()).hexdigest()[:16]
    return f"{metadata.version('ultralytics')}/{digest}"


def zoo_is_current(dest: Path) -> bool:
    """Return whether dest holds a complete zoo from this builder (its manifest is written last)."""
    manifest = Path(dest) / "manifest.json"
    try:
        return json.loads(manifest.read_text()).get("builder") == builder_id()
    except (OSError, ValueError):
        return False


def build_model_zoo(dest: Path) -> Path:
    """Build the zoo into dest unless it is already current; return dest. Concurrent callers wait their turn."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several pytest sessions may share one cache folder
        if zoo_is_current(dest):
            return dest
        result = subprocess.run(
            [sys.executable, str(BUILDER), str(dest)],
            cwd=dest,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise RuntimeError(f"building the model zoo failed (exit {result.returncode}):\n{tail}")
    return dest
