"""Real source servers for the live-source tests and bench/lag.py: GStreamer's RTSP server and ffmpeg's HTTP MJPEG.

Both run as child processes in their own process group (so a test can SIGKILL, SIGSTOP or restart them
mid-stream) and serve JPEG frames the test wrote (looped at a fixed fps). The RTSP server runs with
Debian's /usr/bin/python3 because python3-gi (GStreamer's bindings) is installed for it, not for the venv.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from harness.client import free_port

SOURCE_SERVERS = Path(__file__).resolve().parent  # rtsp_server.py and mjpeg_server.py are beside this module
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_ELEMENTS = ("multifilesrc", "appsrc", "jpegdec", "videoconvert", "x264enc", "rtph264pay")
RTSP_PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"


def rtsp_missing() -> str | None:
    """Why the RTSP server cannot run here, or None."""
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        f"assert all(Gst.ElementFactory.find(e) for e in {RTSP_ELEMENTS!r})"
    )
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    if subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, check=False).returncode != 0:
        return f"GStreamer's RTSP server or its plugins are missing: apt-get install {RTSP_PACKAGES}"
    return None


def ffmpeg_missing() -> str | None:
    return None if shutil.which("ffmpeg") else "ffmpeg is missing: apt-get install ffmpeg"


def write_frames(folder: Path, count: int = 50, width: int = 640, height: int = 480) -> str:
    """Write count JPEG frames of a textured scene with a moving box; return their printf pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), np.uint8), (0, 0), 5)
    for i in range(count):
        image = background.copy()
        x = (i * 11) % (width - 120)
        cv2.rectangle(image, (x, height // 3), (x + 110, height // 3 + 90), (40, 40, 220), -1)
        cv2.putText(image, str(i), (10, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), image)
    return str(folder / "%05d.jpg")


class SourceServer:
    """A source server child process that can be killed, paused and restarted on the same port."""

    def __init__(self, command: list[str], url: str):
        self.command = command
        self.url = url
        self.process: subprocess.Popen | None = None

    def start(self) -> SourceServer:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
        )
        line = self.process.stdout.readline().decode().strip()  # both scripts print "ready" once listening
        if line != "ready":
            self.kill()
            raise RuntimeError(f"source server did not start: {self.command[1]} said {line!r}")
        return self

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the server and its children (ffmpeg), as a camera losing power would."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)
            self.process.stdout.close()

    def pause(self) -> None:
        """Freeze it: connections stay open but no frame comes (a stall)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self) -> SourceServer:
        self.kill()
        return self.start()


def rtsp_server(frames: str, port: int | None = None, fps: int = 25) -> SourceServer:
    port = port or free_port()
    script = str(SOURCE_SERVERS / "rtsp_server.py")
    command = [SYSTEM_PYTHON, script, "--port", str(port), "--fps", str(fps), "--frames", frames]
    return SourceServer(command, f"rtsp://127.0.0.1:{port}/stream")


def mjpeg_server(frames: str, port: int | None = None, fps: int = 25) -> SourceServer:
    port = port or free_port()
    script = str(SOURCE_SERVERS / "mjpeg_server.py")
    command = [sys.executable, script, "--port", str(port), "--fps", str(fps), "--frames", frames]
    return SourceServer(command, f"http://127.0.0.1:{port}/")
