"""Build (or reuse) the test model zoo by running tests/build_models.py in a subprocess."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

BUILDER = Path(__file__).resolve().parent / "build_models.py"
BUILD_TIMEOUT = 1800


def build_model_zoo(dest: Path) -> Path:
    """Build the zoo into dest unless it is already up to date; return dest. Concurrent callers wait their turn."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several pytest sessions may share one cache folder
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
