"""Measure source-to-viewer lag of a live source through the real server.

A generator draws the wall-clock time into each frame (a strip of black and white cells), feeds the frames
as MJPEG to a real source server (GStreamer RTSP, H.264; or ffmpeg HTTP MJPEG), the server under test reads
that source, detects, draws and streams, and this tool reads /video_feed back like a browser would and
decodes the stamp of every frame: lag = arrival time - stamp. Median and p95 per run, and the median of the
first and last 30 s (lag must not grow).

    .venv/bin/python -m bench.lag --seconds 120 --source rtsp http --variant fp32@640 int8@320 --json lag.json

A variant may add detect_every and interpolate: fp32@320:3:always (interpolated live: N - 1 frames later).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import requests

from harness.client import free_port, upload, video_feed
from harness.live_servers import SOURCE_SERVERS

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "server" / "demo" / "model" / "shapes-yolov8n.onnx"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has python3-gi for GStreamer

BITS = 24  # milliseconds since the run began: 4.6 hours before it wraps
CHECK_BITS = 16
CELL = 16
ROW_CELLS = 20
# The stamp is drawn in three corners: a detection box or its label may cover one, rarely all three.
CORNERS = ("bottom-left", "bottom-right", "top-right")
MAX_PLAUSIBLE_LAG_MS = 60_000  # a stamp that decodes to more is a misread, counted as unreadable
logger = logging.getLogger("lag")


# -- the stamp: BITS of time plus a checksum, as a grid of cells a JPEG cannot blur away ---------
def _checksum(value: int) -> int:
    return ((value * 40503) ^ (value >> 7) ^ 0xA5C3) & 0xFFFF


def stamp_cells(value: int) -> list[int]:
    value &= (1 << BITS) - 1
    word = value << CHECK_BITS | _checksum(value)
    return [(word >> bit) & 1 for bit in range(BITS + CHECK_BITS - 1, -1, -1)]


def _cell_origin(i: int, shape: tuple[int, ...], corner: str) -> tuple[int, int]:
    height, width = shape[:2]
    rows = (BITS + CHECK_BITS) // ROW_CELLS
    row, col = divmod(i, ROW_CELLS)
    x = col * CELL if corner.endswith("left") else width - (ROW_CELLS - col) * CELL
    y = row * CELL + (height - rows * CELL if corner.startswith("bottom") else 40)  # below the status line
    return x, y


def draw_stamp(image: np.ndarray, value: int) -> None:
    for corner in CORNERS:
        for i, bit in enumerate(stamp_cells(value)):
            x, y = _cell_origin(i, image.shape, corner)
            image[y : y + CELL, x : x + CELL] = 255 if bit else 0


def read_stamp(image: np.ndarray) -> int | None:
    """Return the stamped value, or None when no corner checks out (covered by boxes, resized...)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    for corner in CORNERS:
        word = 0
        for i in range(BITS + CHECK_BITS):
            x, y = _cell_origin(i, gray.shape, corner)
            middle = gray[y + 4 : y + CELL - 4, x + 4 : x + CELL - 4].mean()
            word = word << 1 | int(middle > 127)
        value, check = word >> CHECK_BITS, word & 0xFFFF
        if _checksum(value) == check:
            return value
    return None


# -- the stamping source ------------------------------------------------------------------------
class StampedSource:
    """Frames of the demo video with the time stamped in, fed at fps to a source server's stdin."""

    def __init__(self, kind: str, port: int, fps: int, size: tuple[int, int], video: Path, epoch: float):
        self.kind, self.port, self.fps, self.size, self.epoch = kind, port, fps, size, epoch
        self.video = video
        script = SOURCE_SERVERS / ("rtsp_server.py" if kind == "rtsp" else "mjpeg_server.py")
        command = [SYSTEM_PYTHON, str(script), "--port", str(port), "--fps", str(fps), "--stdin"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self.process.stdout.readline()  # "ready"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream" if self.kind == "rtsp" else f"http://127.0.0.1:{self.port}/"

    def _frames(self):
        while True:
            capture = cv2.VideoCapture(str(self.video))
            ok, image = capture.read()
            while ok:
                yield cv2.resize(image, self.size) if image.shape[1::-1] != self.size else image
                ok, image = capture.read()
            capture.release()

    def _feed(self) -> None:
        interval = 1.0 / self.fps
        due = time.monotonic()
        try:
            for image in self._frames():
                if self._stop.is_set():
                    return
                due += interval
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                image = image.copy()
                draw_stamp(image, int((time.time() - self.epoch) * 1000))
                _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
                self.process.stdin.write(jpeg.tobytes())
                self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            return

    def close(self) -> None:
        self._stop.set()
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=5)
        self._thread.join(timeout=2)


# -- the server under test ------------------------------------------------------------------------
class Server:
    """run.py as production starts it, on a free loopback port, with its own uploads folder."""

    def __init__(self, uploads: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, str(REPO / "run.py"), "--host", "127.0.0.1", "--port", str(self.port),
                   "--uploads", str(uploads), "--log-level", "WARNING"]
        self.process = subprocess.Popen(command, cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/api/status", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def post(self, path: str, **kwargs) -> dict:
        response = requests.post(self.url + path, timeout=120, **kwargs)
        response.raise_for_status()
        return response.json()

    def status(self) -> dict:
        return requests.get(self.url + "/api/status", timeout=10).json()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


@dataclass
class Run:
    source: str
    variant: str
    seconds: float
    frames: int
    unreadable: int
    median_ms: float
    p95_ms: float
    first30_median_ms: float
    last30_median_ms: float
    source_drops: int
    source_reconnects: int
    server_lag_ms: float | None  # the server's own share: decoded to published (median of the last frames)
    server_fps: float
    load_average: float


def variant_settings(variant: str) -> dict:
    """The settings of a variant: precision@imgsz, then optionally :detect_every and :interpolate (fp32@320:3:always)."""
    head, *keyframing = variant.split(":")
    precision, imgsz = head.split("@")
    every = keyframing[0] if keyframing else "1"
    settings = {"precision": precision, "imgsz": int(imgsz), "detect_every": every if every == "auto" else int(every)}
    return {**settings, "interpolate": keyframing[1]} if len(keyframing) > 1 else settings


def measure(server: Server, source: StampedSource, variant: str, seconds: float, epoch: float) -> Run:
    server.post("/api/settings", json=variant_settings(variant))
    server.post("/source", json={"url": source.url})
    server.post("/stream/start")
    lags: list[tuple[float, float]] = []
    unreadable = 0
    started = time.time()
    with video_feed(server.url) as jpegs:
        for jpeg in jpegs:
            arrived = time.time()
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            value = read_stamp(image) if image is not None else None
            lag_ms = (arrived - epoch) * 1000 - value if value is not None else -1.0
            if 0 <= lag_ms < MAX_PLAUSIBLE_LAG_MS:
                lags.append((arrived - started, lag_ms))
            else:
                unreadable += 1
            if arrived - started >= seconds:
                break
    status = server.status()
    live = status.get("source") or {}
    server.post("/stream/stop")
    values = [lag for _, lag in lags]
    first = [lag for t, lag in lags if t < 30] or [float("nan")]
    last = [lag for t, lag in lags if t >= seconds - 30] or [float("nan")]
    return Run(
        source=source.kind,
        variant=variant,
        seconds=round(time.time() - started, 1),
        frames=len(values),
        unreadable=unreadable,
        median_ms=round(statistics.median(values), 1),
        p95_ms=round(float(np.percentile(values, 95)), 1),
        first30_median_ms=round(statistics.median(first), 1),
        last30_median_ms=round(statistics.median(last), 1),
        source_drops=live.get("drops", -1),
        source_reconnects=live.get("reconnects", -1),
        server_lag_ms=live.get("lag_ms"),
        server_fps=status["stats"]["fps"],
        load_average=os.getloadavg()[0],
    )


def prepare_int8(server: Server, video: Path, imgsz: int) -> None:
    """Tune int8 on the demo video (live sources have no file to calibrate on), then drop the video."""
    upload(server.url, "/upload/video", video).raise_for_status()
    server.post("/api/settings", json={"precision": "int8", "imgsz": imgsz})
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        status = server.status()
        if status["precision"]["active"] == "int8":
            return
        if status.get("error"):
            raise RuntimeError(status["error"])
        time.sleep(2)
    raise RuntimeError("int8 tuning did not finish")


def cpu_flags() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in lines if line.startswith(("flags", "Features"))).split(":")[1]
    except (OSError, StopIteration):
        return platform.processor()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")
    return " ".join(f for f in flags.split() if f in wanted)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--source", nargs="+", default=["rtsp", "http"], choices=["rtsp", "http"])
    parser.add_argument("--variant", nargs="+", default=["fp32@640", "int8@320"])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    size = tuple(int(v) for v in args.size.split("x"))
    epoch = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "demo.mp4"
        subprocess.run([sys.executable, "-m", "server.demo.video", "--out", str(video)], cwd=REPO, check=True)
        server = Server(Path(tmp) / "uploads")
        runs = []
        try:
            upload(server.url, "/upload/model", args.model, timeout=300)
            for variant in args.variant:
                if variant.startswith("int8"):
                    prepare_int8(server, video, variant_settings(variant)["imgsz"])
            for kind in args.source:
                source = StampedSource(kind, free_port(), args.fps, size, video, epoch)
                try:
                    for variant in args.variant:
                        run = measure(server, source, variant, args.seconds, epoch)
                        logger.info("%s", run)
                        runs.append(run)
                finally:
                    source.close()
        finally:
            server.close()
    report = {"cpu": cpu_flags(), "cores": os.cpu_count(), "fps": args.fps, "size": args.size,
              "runs": [asdict(run) for run in runs]}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
