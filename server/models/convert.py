"""Turn an uploaded .pt into ONNX in a child process (server.models.export_worker), so the server never imports torch."""

from __future__ import annotations

import collections
import importlib.util
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from server.config import REPO_ROOT
from server.models.files import sha256_of
from server.models.info import ModelRejected

logger = logging.getLogger(__name__)

PROJECT_ROOT = REPO_ROOT
WORKER_MODULE = "server.models.export_worker"
NEEDS_TORCH = (
    "converting a .pt needs ultralytics and torch installed on the server; upload a YOLOv8 .onnx export instead"
)
STDERR_LINES_KEPT = 200

ProgressCallback = Callable[[str, float, str], None]


class ConversionFailed(ModelRejected):
    """A .pt that could not be turned into ONNX; the message says why (the child's own words when it has some)."""


def conversion_available() -> bool:
    """Return whether torch and ultralytics are installed (looked up, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "ultralytics"))


def convert_cached(
    pt_path: str | Path,
    cache_dir: str | Path,
    imgsz: int = 640,
    timeout: float = 300,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Return cache_dir/<sha256 of the .pt>.onnx, converting only when it is not there yet."""
    target = Path(cache_dir) / f"{sha256_of(pt_path)}.onnx"
    if target.is_file():
        logger.info("using cached conversion %s", target.name)
        if on_progress:
            on_progress("done", 1.0, "using the cached ONNX conversion")
        return target
    convert_to_onnx(pt_path, target, imgsz=imgsz, timeout=timeout, on_progress=on_progress)
    return target


def convert_to_onnx(
    pt_path: str | Path,
    onnx_path: str | Path,
    imgsz: int = 640,
    timeout: float = 300,
    on_progress: ProgressCallback | None = None,
) -> None:
    """Export pt_path to onnx_path in a child process; raise ConversionFailed with its message on failure."""
    if not conversion_available():
        raise ConversionFailed(NEEDS_TORCH)
    command = [
        sys.executable, "-m", WORKER_MODULE,
        str(Path(pt_path).resolve()), str(Path(onnx_path).resolve()), "--imgsz", str(imgsz),
    ]  # fmt: skip
    started = time.monotonic()
    returncode, stderr_lines = run_worker(command, started + timeout, on_progress, Path(onnx_path).parent)
    if returncode is None:
        raise ConversionFailed(f"Converting the .pt to ONNX took longer than {timeout:g} s and was stopped")
    if returncode != 0 or not Path(onnx_path).is_file():
        logger.warning("export worker failed (exit %s):\n%s", returncode, "\n".join(stderr_lines[-20:]))
        raise ConversionFailed(f"Converting the .pt to ONNX failed: {child_message(stderr_lines, returncode)}")
    logger.info("converted %s to %s in %.1f s", Path(pt_path).name, Path(onnx_path).name, time.monotonic() - started)


def run_worker(
    command: list[str], deadline: float, on_progress: ProgressCallback | None, work_parent: Path | None = None
) -> tuple[int | None, list[str]]:
    """Run the worker in a temp cwd, relaying progress; return (exit code, None if stopped; last stderr lines)."""
    # ultralytics writes into the cwd: keep it in a hidden folder beside the result, which start-up cleans after a crash
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=work_parent) as work:
        try:
            child = subprocess.Popen(
                command,
                cwd=work,
                env=worker_environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                encoding="utf-8",
                errors="replace",  # ultralytics prints emoji; never fail on a byte we cannot decode
            )
        except OSError as exc:
            raise ConversionFailed(f"Could not start the converter: {exc}") from None
        stderr_tail = StderrTail(child.stderr)
        try:
            finished = relay_progress(child, deadline, on_progress)
            returncode = wait_or_kill(child, deadline if finished else time.monotonic())
        finally:  # also when on_progress raised: never leave the child running
            if child.poll() is None:
                child.kill()
                child.wait()
        stderr_tail.thread.join(timeout=5)
    return returncode, list(stderr_tail.lines)


def worker_environment() -> dict[str, str]:
    """Return the child's environment: this project importable, ultralytics offline and not installing anything."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.update({"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"})
    return env


class StderrTail:
    """The last lines a child wrote to stderr, collected by a thread so the pipe never fills up."""

    def __init__(self, stream):
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self.thread = threading.Thread(target=self._read, args=(stream,), name="export-stderr", daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip())
            logger.debug("export worker: %s", line.rstrip())


def wait_or_kill(child: subprocess.Popen, deadline: float) -> int | None:
    """Wait for the child until the deadline; kill it then. Return its exit code, or None when it was killed."""
    try:
        return child.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return None


def relay_progress(child: subprocess.Popen, deadline: float, on_progress: ProgressCallback | None) -> bool:
    """Pass the child's JSON progress lines to on_progress until it closes stdout; False if the deadline passed."""
    events: queue.Queue = queue.Queue()
    reader = threading.Thread(target=read_events, args=(child.stdout, events), name="export-stdout", daemon=True)
    reader.start()
    while True:
        try:
            event = events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if event is None:
            return True
        if on_progress:
            on_progress(str(event.get("stage", "")), float(event.get("progress", 0.0)), str(event.get("message", "")))


def read_events(stream, events: queue.Queue) -> None:
    """Parse JSON lines from stream into events, then put None when it closes."""
    for line in stream:
        try:
            event = json.loads(line)
        except ValueError:
            logger.warning("export worker wrote a non-JSON line: %r", line[:200])
            continue
        if isinstance(event, dict):
            events.put(event)
    events.put(None)


def child_message(lines: list[str], returncode: int) -> str:
    """Return the child's last "error: ..." line, else its last line, else its exit code."""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: ") :]
    last = next((line for line in reversed(lines) if line.strip()), "")
    return last or f"the converter exited with code {returncode}"
