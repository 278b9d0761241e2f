"""The real server in a child process, started as a user starts it: `python run.py` on an ephemeral 127.0.0.1 port.

For the benchmark, the soak and the tests that must kill or signal the whole process. The port is read from
run.py's own "serving on" log line (port 0: no race for a free port), so the child is up once it is known.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVING_LINE = re.compile(r"serving on 127\.0\.0\.1:(\d+)")
START_TIMEOUT_S = 120


class ServerProcess:
    """run.py (or another entry with run.py's flags, such as a test's hooked copy) serving uploads on 127.0.0.1."""

    def __init__(self, uploads: Path, *flags: str, entry: tuple[str, ...] = ("run.py",), log_path: Path | None = None):
        self.uploads = Path(uploads)
        self._own_log = log_path is None
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="edge-server-", suffix=".log")[1])
        command = [sys.executable, *entry, "--host", "127.0.0.1", "--port", "0", "--uploads", str(self.uploads),
                   "--log-level", "INFO", *flags]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)},
            )  # fmt: skip
        self.port = self._wait_for_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = SERVING_LINE.search(self.log())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the server did not start:\n{self.log()[-3000:]}")

    def log(self) -> str:
        """Everything the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict:
        import requests  # noqa: PLC0415 (dev-only; the benchmark's modes without a server run without it)

        return requests.get(f"{self.url}/api/status", timeout=30).json()

    def kill(self) -> None:
        """SIGKILL the server, as a power cut or the OOM killer would, and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Ask the server to shut down (SIGTERM as systemd does, SIGINT as Ctrl-C does); return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # run.py then writes every thread's stack to its log
            time.sleep(1)
            self.kill()
            raise RuntimeError(f"the server did not exit {timeout:.0f} s after {signal.Signals(sig).name}; "
                               f"its log, with its threads' stacks:\n{self.log()[-6000:]}") from None

    def close(self) -> None:
        """Stop the server whatever state it is in."""
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            pass
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
