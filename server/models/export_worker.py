"""Convert an Ultralytics .pt to ONNX in a child process: python -m server.models.export_worker IN.pt OUT.onnx --imgsz 640.

This is the only server module that imports torch and ultralytics, and only in its own process. stdout carries
nothing but JSON progress lines ({"stage", "progress", "message"}); whatever ultralytics, torch or onnx print goes
to stderr. On failure the exit code is non-zero and the last stderr line is "error: <message for the user>".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import traceback
from pathlib import Path

from server.models.convert import NEEDS_TORCH
from server.models.files import write_atomically

# Set before ultralytics is imported: no downloads, no pip installs, and its own restricted (weights_only) loader
# as a second line of defence behind server.models.identify' allow-list check.
WORKER_ENVIRONMENT = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "ULTRALYTICS_SAFE_LOAD": "1"}
EXIT_FAILED, EXIT_MISSING_PACKAGES = 1, 3


class ExportError(RuntimeError):
    """A failure whose message is meant for the user."""


class Progress:
    """Write JSON progress lines to the real stdout after pointing fd 1 (and sys.stdout) at stderr."""

    def __init__(self):
        self.stream = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # anything printed later, even by C code, lands on stderr
        sys.stdout = sys.stderr

    def emit(self, stage: str, progress: float, message: str = "") -> None:
        self.stream.write(json.dumps({"stage": stage, "progress": progress, "message": message}) + "\n")


def block_network() -> None:
    """Make every outgoing connection fail, so nothing in this process can download anything."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the export worker")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def missing_packages() -> list[str]:
    """Return which of the packages an export needs are not installed."""
    return [name for name in ("torch", "ultralytics", "onnx") if importlib.util.find_spec(name) is None]


def report_simplifying(progress: Progress) -> None:
    """Wrap onnxslim.slim (which ultralytics calls after tracing) so its start is reported."""
    import onnxslim

    original = onnxslim.slim

    def slim(*args, **kwargs):
        progress.emit("simplifying", 0.8, "simplifying the ONNX graph")
        return original(*args, **kwargs)

    onnxslim.slim = slim


def export(weights: Path, output: Path, imgsz: int, progress: Progress) -> None:
    """Export weights to output (dynamic H/W, simplified, CPU), writing output atomically."""
    simplify = importlib.util.find_spec("onnxslim") is not None
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=output.parent) as work:  # start-up cleans it after a crash
        os.chdir(work)  # ultralytics writes next to the weights and into the cwd: keep both in the temp dir
        # A neutral name: ultralytics rewrites names like "yolov5n.pt" to download "yolov5nu.pt" instead.
        local = Path(work) / "model.pt"
        shutil.copyfile(weights, local)
        progress.emit("loading", 0.1, "loading the checkpoint")
        from ultralytics import YOLO

        model = YOLO(str(local))
        progress.emit("exporting", 0.3, "tracing the model to ONNX")
        if simplify:
            report_simplifying(progress)
        exported = model.export(format="onnx", dynamic=True, simplify=simplify, imgsz=imgsz, device="cpu")
        if not exported or not Path(exported).is_file():
            raise ExportError("ultralytics reported no ONNX file")
        write_atomically(Path(exported), output)
    progress.emit("done", 1.0, "converted to ONNX")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert an Ultralytics .pt checkpoint to ONNX.")
    parser.add_argument("weights", type=Path, help="the .pt checkpoint")
    parser.add_argument("output", type=Path, help="where to write the .onnx")
    parser.add_argument("--imgsz", type=int, default=640, help="export size (the model stays dynamic)")
    return parser.parse_args(argv)


def die_with_parent() -> None:
    """Ask the kernel to kill this process when the server dies, so it never writes into the cache after that."""
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the server died before the line above took effect
        os._exit(EXIT_FAILED)


def main(argv: list[str] | None = None) -> int:
    """Run one conversion; return the process exit code."""
    if sys.platform.startswith("linux"):
        die_with_parent()
    args = parse_args(argv)
    progress = Progress()
    os.environ.update(WORKER_ENVIRONMENT)
    block_network()
    missing = missing_packages()
    if missing:
        print(f"missing packages: {', '.join(missing)}\nerror: {NEEDS_TORCH}", file=sys.stderr)
        return EXIT_MISSING_PACKAGES
    try:
        export(args.weights.resolve(), args.output.resolve(), args.imgsz, progress)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # any failure inside ultralytics/torch: the traceback for logs, one line for the user
        traceback.print_exc()
        detail = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())[:500]  # one line, no colours
        print(f"error: {type(exc).__name__}: {detail}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
