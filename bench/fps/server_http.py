"""The real server over HTTP: run.py in a child process, its producer's rate with and without /video_feed viewers."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.fps.progress import ProgressLine
from bench.fps.records import HttpRow, Variant
from harness.client import upload
from harness.server_process import ServerProcess
from server.vision import mjpeg
from server.vision.settings import Settings

BOUNDARY = f"--{mjpeg.BOUNDARY}\r\n".encode()


class Viewer(threading.Thread):
    """Read /video_feed over a plain HTTP/1.0 socket and count the JPEG parts that arrive.

    HTTP/1.0 makes the server stream the body as is (no chunked encoding), so counting boundaries
    in raw bytes is all the client does: on a small CPU it must not steal time from the server.
    """

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.frames, self.stop, self.error = url, 0, threading.Event(), None

    def run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        buffer, tail = bytearray(1 << 18), b""
        try:
            with socket.create_connection((host, int(port)), timeout=30) as connection:
                connection.sendall(f"GET /video_feed HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                while not self.stop.is_set():
                    size = connection.recv_into(buffer)
                    if size == 0:
                        return
                    data = tail + bytes(buffer[:size])
                    self.frames += data.count(BOUNDARY)
                    tail = data[-(len(BOUNDARY) - 1):]
        except OSError as error:  # reported in the row, not raised from a thread
            self.error = str(error)


def run_http(variants: list[Variant], viewer_counts: list[int], model: Path, video: Path, base: Settings,
             seconds: float) -> list[HttpRow]:
    """Stream each variant from the real server with realtime off; count its frames with and without viewers.

    The measure is the server's own frame counter (stats.frames), so viewers that read and discard
    show how much CPU serving them takes from the producer; each viewer count is bracketed by a
    measurement with no viewer just before and just after it.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-server-") as uploads:
        server = ServerProcess(Path(uploads))
        try:
            for path, kind in ((video, "video"), (model, "model")):
                upload(server.url, f"/upload/{kind}", path, timeout=900).raise_for_status()
            for variant in variants:
                rows += _http_variant(server.url, variant, viewer_counts, seconds, base)
        finally:
            server.close()
    return rows


def _server_frames(url: str) -> int:
    return requests.get(f"{url}/api/status", timeout=30).json()["stats"]["frames"]


def _producer_fps(url: str, seconds: float) -> float:
    """Frames per second the server's producer published over `seconds`, by its own counter."""
    before, started = _server_frames(url), time.perf_counter()
    time.sleep(seconds)
    return (_server_frames(url) - before) / (time.perf_counter() - started)


def _http_variant(url: str, variant: Variant, viewer_counts: list[int], seconds: float,
                  base: Settings) -> list[HttpRow]:
    """Apply a variant's settings on the server, start it, then measure none / n viewers / none for each n."""
    def fail(message: str) -> list[HttpRow]:
        return [HttpRow(variant.name, n, [], 0.0, error=message[:200]) for n in viewer_counts]

    changes = {"realtime": False, "loop": True, "imgsz": variant.imgsz, "precision": variant.precision,
               "detect_every": variant.detect_every, "threads": variant.threads or base.threads, "conf": base.conf}
    if variant.precision == "int8":  # tune at 640 first, as this benchmark's own int8 rows are
        requests.post(f"{url}/api/settings", json={"precision": "int8", "imgsz": 640}, timeout=30)
        _wait_for_jobs(url)
    response = requests.post(f"{url}/api/settings", json=changes, timeout=30)
    if response.status_code != 200:
        return fail(response.text)
    _wait_for_jobs(url)
    precision = requests.get(f"{url}/api/status", timeout=30).json().get("precision") or {}
    if precision.get("active", variant.precision) != variant.precision:
        return fail(f"the server runs {precision.get('active')}, not {variant.precision}")
    rows = []
    requests.post(f"{url}/stream/start", timeout=600).raise_for_status()
    try:
        time.sleep(2)  # the producer reaches its pace
        progress = ProgressLine(f"http {variant.name}", len(viewer_counts) * 3)
        idle = _producer_fps(url, seconds)
        for step, count in enumerate(viewer_counts):
            row = _count_viewers(url, variant.name, count, seconds)
            after = _producer_fps(url, seconds)
            row.idle_fps = round((idle + after) / 2, 2)
            rows.append(row)
            idle = after
            progress.update(3 * (step + 1), f"x{count}: {row.server_fps:.1f} of {row.idle_fps:.1f} fps")
        progress.close()
    finally:
        requests.post(f"{url}/stream/stop", timeout=30)
    return rows


def _wait_for_jobs(url: str, timeout: float = 1800) -> None:
    """Wait while the server converts or quantizes, showing its progress."""
    deadline, progress = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/api/status", timeout=30).json().get("job")
        if not job:
            break
        progress = progress or ProgressLine(f"server {job['kind']}", 100)
        progress.update(round(job["progress"] * 100), job.get("message", "")[:40])
        time.sleep(1)
    if progress:
        progress.close()


def _count_viewers(url: str, name: str, count: int, seconds: float) -> HttpRow:
    viewers = [Viewer(url) for _ in range(count)]
    for viewer in viewers:
        viewer.start()
    time.sleep(1)  # let every viewer connect
    before, started = [v.frames for v in viewers], time.perf_counter()
    server_fps = _producer_fps(url, seconds)
    after, elapsed = [v.frames for v in viewers], time.perf_counter() - started
    for viewer in viewers:
        viewer.stop.set()
    fps = [round((b - a) / elapsed, 2) for a, b in zip(before, after)]
    errors = [v.error for v in viewers if v.error]
    return HttpRow(name, count, fps, round(server_fps, 2), error=errors[0] if errors else None)
