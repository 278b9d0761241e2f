"""Benchmark this server's pipeline against Ultralytics' own predictor on one video, in one run.

    python -m tools.bench --video V --model M [--frames 300] [--precision fp32 int8]
        [--imgsz 640 320] [--detect-every 1 3] [--http fp32-640 int8-320-de3] [--viewers 1 8]
        [--json bench.json] [--plot bench.png]

Rows: Ultralytics on the .pt (PyTorch) and on its default ONNX export, streamed as a user of
Ultralytics would (predict(stream=True) -> results.plot() -> JPEG); then this project's
FramePipeline, FrameSource, Detector and Tracker (the code the server runs) for each variant
precision x imgsz x detect_every; then the real server over HTTP (run.py in a child process,
realtime off) read by 1 and 8 concurrent /video_feed viewers. Agreement is mAP50 of each row's
per-frame detections against this project's fp32 at 640 on every frame.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from server.config import Config
from server.models.runtime import ModelRuntime
from server.vision import mjpeg
from server.vision.detector import Detector, default_threads
from server.vision.engines import ONNXRUNTIME
from server.vision.metrics import map50
from server.vision.pipeline import STAGES, FramePipeline
from server.vision.processing import Detections
from server.vision.settings import Settings
from server.vision.stream import StreamRunner
from server.vision.tracker import Tracker
from server.vision.sources import CALIBRATION_FRAMES, Frame, FrameSource, probe_video
from tests.support.server_process import ServerProcess

logger = logging.getLogger(__name__)

REFERENCE = "fp32-640"
VIEWER_SHARE = 0.95  # of its frame rate the producer keeps while 8 viewers read
ULTRALYTICS_ONNX = "ultralytics-onnx"
ULTRALYTICS_PT = "ultralytics-pt"
BOUNDARY = f"--{mjpeg.BOUNDARY}\r\n".encode()
FONT_NAME = "DejaVuSans.ttf"  # matplotlib ships it; ultralytics finds it there instead of downloading Arial
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Variant:
    """One configuration of this project's pipeline (threads: ONNX Runtime intra-op threads, None: --threads)."""

    precision: str
    imgsz: int
    detect_every: int = 1
    threads: int | None = None

    @property
    def name(self) -> str:
        suffix = f"-de{self.detect_every}" if self.detect_every > 1 else ""
        suffix += f"-t{self.threads}" if self.threads else ""
        return f"{self.precision}-{self.imgsz}{suffix}"

    @classmethod
    def parse(cls, text: str) -> Variant:
        """Parse a name such as fp32-640, int8-320-de3 or fp32-640-t1 (one ONNX Runtime thread)."""
        precision, *rest = text.split("-")
        try:
            imgsz, every, threads = int(rest[0]), 1, None
            for part in rest[1:]:
                if part.startswith("de"):
                    every = int(part[2:])
                elif part.startswith("t"):
                    threads = int(part[1:])
                else:
                    raise ValueError(part)
            variant = cls(precision, imgsz, every, threads)
        except (IndexError, ValueError):
            raise argparse.ArgumentTypeError(
                f"variant {text!r} is not like fp32-640, int8-320-de3 or fp32-640-t1") from None
        if variant.precision not in ("fp32", "int8"):
            raise argparse.ArgumentTypeError(f"precision must be fp32 or int8 in {text!r}")
        return variant


@dataclass
class Row:
    """What one pipeline measured on the video."""

    name: str
    kind: str  # "ultralytics" or "pipeline"
    frames: int
    fps: float
    stage_ms: dict[str, float]
    agreement: float | None = None
    ratio: float | None = None  # fps over Ultralytics-ONNX's, run just before and after each segment of this row
    detect_every: int = 1
    latency_ms: float | None = None  # decode to publish, per frame (our producer rows)
    peer_fps: float | None = None  # Ultralytics-ONNX in the segments bracketing this row's
    detections: list[Detections] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("detections")
        return data


@dataclass
class HttpRow:
    """The real server's producer rate (its own frame counter) with n viewers, and with none just before and after."""

    variant: str
    viewers: int
    fps_per_viewer: list[float]
    server_fps: float  # frames the producer published per second while the viewers read
    idle_fps: float | None = None  # the same with no viewer, mean of just before and just after
    viewer_cap: float | None = None
    error: str | None = None

    @property
    def mean_fps(self) -> float:
        return float(np.mean(self.fps_per_viewer)) if self.fps_per_viewer else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "mean_fps": round(self.mean_fps, 2)}


@dataclass
class Target:
    """One speed goal from the issue, and how far this run is from it."""

    name: str
    goal: str
    value: str
    met: bool | None  # None: not measured in this run

    def as_dict(self) -> dict:
        return asdict(self)


class ProgressLine:
    """Show progress on stderr: a redrawn bar on a terminal, a line every tenth otherwise."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, max(1, total)
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self._last_tenth = -1

    def update(self, done: int, extra: str = "") -> None:
        fraction = min(1.0, done / self.total)
        tenth = int(fraction * 10)
        if not self.tty and tenth == self._last_tenth:
            return
        self._last_tenth = tenth
        bar = "#" * int(fraction * 20)
        line = f"  {self.label:<22} [{bar:<20}] {done}/{self.total} {extra}"
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()

    def close(self, summary: str = "") -> None:
        elapsed = time.perf_counter() - self.started
        sys.stderr.write(("\r" if self.tty else "") + f"  {self.label:<22} done in {elapsed:.1f}s {summary}\n")
        sys.stderr.flush()


# -- models ------------------------------------------------------------------------------------


def class_names(onnx_path: Path) -> list[str]:
    """Read class names from an ultralytics ONNX export's metadata."""
    meta = Detector(onnx_path, threads=1).session.get_modelmeta().custom_metadata_map
    names = ast.literal_eval(meta.get("names", "{}"))
    return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)


def our_onnx(model: Path, cache: Path) -> Path:
    """Return the ONNX the server would run for these weights, converting a .pt the server's way."""
    if model.suffix == ".onnx":
        return model
    from server.models import convert  # noqa: PLC0415  (only for .pt weights)

    return Path(convert.convert_cached(model, cache, imgsz=640, timeout=900, on_progress=None))


def ultralytics_onnx(model: Path, cache: Path) -> Path:
    """Export a .pt with Ultralytics' defaults (static 640x640), as its users do; reuse an earlier export."""
    if model.suffix == ".onnx":
        return model
    folder = cache / "ultralytics-export"
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / model.name
    exported = copy.with_suffix(".onnx")
    if exported.is_file() and exported.stat().st_mtime >= model.stat().st_mtime:
        return exported
    copy.write_bytes(model.read_bytes())
    from ultralytics import YOLO  # noqa: PLC0415

    return Path(YOLO(str(copy)).export(format="onnx", imgsz=640, verbose=False))


def int8_model(onnx_path: Path, video: Path, threads: int, retune: bool) -> tuple[Path, dict]:
    """Tune int8 on frames of the video (or reuse a tuning of this very model on this CPU)."""
    from server.models.int8 import tuning as quantize  # noqa: PLC0415
    from server.vision.sources import sample_frames  # noqa: PLC0415

    out = quantize.int8_path_for(onnx_path)
    report = None if retune else quantize.cached_tuning(onnx_path, out)
    if report is None:
        progress = ProgressLine("int8 tuning", 100)
        report = quantize.tune_int8(
            onnx_path, sample_frames(video, CALIBRATION_FRAMES), 640, out, threads=threads,
            on_progress=lambda stage, done, message: progress.update(round(done * 100), message[:40]),
        )
        progress.close(report.note)
    return Path(report.path), report.as_dict()  # the chosen recipe's model


# -- runs --------------------------------------------------------------------------------------


def bench_runtime(fp32: Path, int8: Path | None) -> ModelRuntime:
    """The server's ModelRuntime, keeping every session: the benchmark's rows take turns frame by frame."""
    return ModelRuntime(fp32, lambda: int8, keep=16)


def pipeline_settings(variant: Variant, base: Settings) -> Settings:
    """Return the stream settings of a variant, with realtime pacing off."""
    return replace(base, classes=None, imgsz=variant.imgsz, precision=variant.precision,
                   detect_every=variant.detect_every, threads=variant.threads or base.threads,
                   realtime=False, loop=False)


class Timing:
    """Per-frame wall time and stage times of one row, leaving out warm-up frames."""

    def __init__(self, stages: tuple[str, ...]):
        self.sums = dict.fromkeys(stages, 0.0)
        self.frames, self.seconds = 0, 0.0

    def add(self, seconds: float, stage_ms: dict[str, float]) -> None:
        self.frames += 1
        self.seconds += seconds
        for stage in self.sums:
            self.sums[stage] += stage_ms.get(stage, 0.0)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def stage_ms(self) -> dict[str, float]:
        return {stage: round(total / max(1, self.frames), 2) for stage, total in self.sums.items()}


class SegmentSource:
    """Hand the producer `frames` frames of a long-lived FrameSource, then end (the next segment goes on from there).

    Each frame is stamped as decoded when handed over, so a segment's latency leaves out the time the
    frame waited in the decode-ahead queue between segments.
    """

    paces_itself = False  # realtime is off in every row anyway

    def __init__(self, inner: FrameSource, frames: int):
        self.inner, self.left, self.loop, self.fps = inner, frames, True, inner.fps

    def read(self, timeout: float) -> Frame | None:
        if self.left <= 0:
            return None
        frame = self.inner.read(timeout=timeout)
        if frame is None:
            return None
        self.left -= 1
        return replace(frame, decoded_at=time.perf_counter())

    def published(self, frame: Frame, published_at: float) -> None:
        self.inner.published(frame, published_at)

    def status(self) -> dict:
        return self.inner.status()

    def calibration_frames(self, count: int) -> list[np.ndarray]:
        return self.inner.calibration_frames(count)

    def close(self) -> None:
        """The inner source lives on for the next segment."""


class ProducerRun:
    """This server's StreamRunner (the producer, pipelined or serial) on the video, a segment at a time, realtime off."""

    kind = "pipeline"

    def __init__(self, variant: Variant, runtime: ModelRuntime, video: Path, names: list[str], frames: int,
                 base: Settings, pipelined: bool = True):
        self.name = variant.name + ("" if pipelined else " serial")
        self.variant, self.frames, self.video, self.pipelined = variant, frames, video, pipelined
        self.settings = pipeline_settings(variant, base)
        runtime.detector_for(self.settings)  # the server loads and warms the session before streaming
        self.pipeline = FramePipeline(runtime.detector_for, names, tracker_factory=Tracker)
        self.source = FrameSource(video, loop=False)
        self.detections: list[Detections] = []
        self.timing = Timing(STAGES)
        self.latencies: list[float] = []
        self.segments: list[tuple[int, float]] = []  # (frames, seconds) of each timed segment
        self._published: list[tuple[dict, float]] = []

    def _tap(self, item, result, published: float) -> None:
        self.detections.append(result.detections)
        frame = item.frame
        self._published.append((result.timings_ms, (published - frame.decoded_at) * 1000 + frame.decode_ms))

    def segment(self, frames: int, timed: bool) -> bool:
        """Stream the next `frames` frames through a fresh runner (same pipeline, same tracks); False at the end."""
        frames = min(frames, self.frames - len(self.detections))
        if frames <= 0:
            return False
        self._published = []
        runner = StreamRunner(lambda loop: SegmentSource(self.source, frames), self.pipeline, lambda: self.settings,
                              lambda error: None, pipelined=self.pipelined, on_publish=self._tap)
        started = time.perf_counter()
        runner.start()
        runner.thread.join()
        seconds = time.perf_counter() - started
        if timed and self._published:
            self.segments.append((len(self._published), seconds))
            self.timing.frames += len(self._published)
            self.timing.seconds += seconds
            for timings, latency in self._published:
                self.timing.sums = {k: v + timings.get(k, 0.0) for k, v in self.timing.sums.items()}
                self.latencies.append(latency)
        return len(self._published) == frames

    def close(self) -> None:
        self.source.close()

    def row(self) -> Row:
        latency = round(float(np.median(self.latencies)), 2) if self.latencies else None
        return Row(self.name, self.kind, len(self.detections), round(self.timing.fps, 2), self.timing.stage_ms(),
                   detect_every=self.variant.detect_every, latency_ms=latency, detections=self.detections)


class UltralyticsRun:
    """Ultralytics' predictor streaming the video, then results.plot() and JPEG encoding, one frame per step."""

    kind = "ultralytics"
    stages = ("preprocess", "inference", "postprocess", "draw", "encode")

    def __init__(self, name: str, model: Path, video: Path, frames: int, base: Settings):
        from ultralytics import YOLO  # noqa: PLC0415

        self.name, self.frames, self.settings, self.video = name, frames, base, video
        self.model = YOLO(str(model), task="detect")
        self.results = self._predict()
        self.detections: list[Detections] = []
        self.timing = Timing(self.stages)
        self.segments: list[tuple[int, float]] = []
        self.loops = False  # the peer loops the video: it runs a segment beside each of ours

    def _predict(self):
        return self.model.predict(source=str(self.video), stream=True, imgsz=640, conf=self.settings.conf,
                                  iou=self.settings.iou, device="cpu", verbose=False)

    def segment(self, frames: int, timed: bool) -> bool:
        """Run `frames` frames, timing all but the first of the turn (the session's threads wake up then)."""
        before_frames, before_seconds = self.timing.frames, self.timing.seconds
        for index in range(frames):
            if not self.step(timed and index > 0):
                return False
        if timed:
            self.segments.append((self.timing.frames - before_frames, self.timing.seconds - before_seconds))
        return True

    def step(self, timed: bool) -> bool:
        import cv2  # noqa: PLC0415

        if len(self.detections) >= self.frames and not self.loops:
            return False
        started = time.perf_counter()
        result = next(self.results, None)
        if result is None and self.loops:
            self.results.close()
            self.results, started = self._predict(), time.perf_counter()
            result = next(self.results, None)
        if result is None:
            return False
        drawn = time.perf_counter()
        image = result.plot(font=FONT_NAME, pil=False)
        encoded = time.perf_counter()
        cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality])
        done = time.perf_counter()
        boxes = result.boxes
        if len(self.detections) < self.frames:  # agreement is scored on the video's first pass
            self.detections.append(Detections(boxes.xyxy.numpy().astype(np.float32),
                                              boxes.conf.numpy().astype(np.float32),
                                              boxes.cls.numpy().astype(np.int64)))
        if timed:
            stage_ms = {stage: result.speed.get(stage) or 0.0 for stage in ("preprocess", "inference", "postprocess")}
            stage_ms.update(draw=(encoded - drawn) * 1000, encode=(done - encoded) * 1000)
            self.timing.add(done - started, stage_ms)
        return True

    def close(self) -> None:
        self.results.close()

    def row(self) -> Row:
        return Row(self.name, self.kind, len(self.detections), round(self.timing.fps, 2), self.timing.stage_ms(),
                   detections=self.detections)


def segment_fps(segment: tuple[int, float]) -> float:
    frames, seconds = segment
    return frames / seconds if seconds else 0.0


def run_interleaved(runs: list, peer, warmup: int, segment: int) -> list[Row]:
    """Run every row a segment of frames at a time, round-robin, so load that comes and goes hits all alike.

    The peer (Ultralytics-ONNX, looping the video) runs one segment before every other row's segment
    and one after the last, so each of our segments has a peer segment just before and just after it;
    a row's peer_fps is the mean of those brackets. The first `warmup` frames of each row are not timed.
    """
    for run in [peer, *runs] if peer else runs:  # warm-up turns: sessions, caches, tracker
        run.segment(warmup, timed=False)
    if peer is not None:
        peer.loops = True
        peer.segment(segment, timed=True)
    brackets: dict[str, list[float]] = {run.name: [] for run in runs}
    total = sum(run.frames for run in runs)
    progress, active = ProgressLine("rows, interleaved", total), list(runs)
    while active:
        for run in list(active):
            before = peer.segments[-1] if peer is not None else None
            more = run.segment(segment, timed=True)
            if peer is not None and run.segments:
                peer.segment(segment, timed=True)
                brackets[run.name].append((segment_fps(before) + segment_fps(peer.segments[-1])) / 2)
            if not more or len(run.detections) >= run.frames:
                run.close()
                active.remove(run)
            progress.update(sum(len(r.detections) for r in runs), f"{run.name:<18} {run.timing.fps:6.1f} fps")
    progress.close()
    rows = [run.row() for run in runs]
    for row in rows:
        if brackets.get(row.name):
            row.peer_fps = round(float(np.mean(brackets[row.name])), 2)
    if peer is not None:
        peer.close()
        rows.insert(0, peer.row())
    return rows


# -- the server over HTTP ----------------------------------------------------------------------

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
    import requests  # noqa: PLC0415

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-server-") as uploads:
        server = ServerProcess(Path(uploads))
        try:
            for path, kind in ((video, "video"), (model, "model")):
                with open(path, "rb") as handle:
                    requests.post(f"{server.url}/upload/{kind}", files={"file": (path.name, handle)},
                                  timeout=900).raise_for_status()
            for variant in variants:
                rows += _http_variant(server.url, variant, viewer_counts, seconds, base)
        finally:
            server.close()
    return rows


def _server_frames(url: str) -> int:
    import requests  # noqa: PLC0415

    return requests.get(f"{url}/api/status", timeout=30).json()["stats"]["frames"]


def _producer_fps(url: str, seconds: float) -> float:
    """Frames per second the server's producer published over `seconds`, by its own counter."""
    before, started = _server_frames(url), time.perf_counter()
    time.sleep(seconds)
    return (_server_frames(url) - before) / (time.perf_counter() - started)


def _http_variant(url: str, variant: Variant, viewer_counts: list[int], seconds: float,
                  base: Settings) -> list[HttpRow]:
    """Apply a variant's settings on the server, start it, then measure none / n viewers / none for each n."""
    import requests  # noqa: PLC0415

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
    import requests  # noqa: PLC0415

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


# -- results -----------------------------------------------------------------------------------


def score_rows(rows: list[Row]) -> None:
    """Fill each row's agreement with the reference row and its speed ratio over Ultralytics-ONNX."""
    reference = next((r for r in rows if r.name == REFERENCE), None)
    baseline = next((r for r in rows if r.name == ULTRALYTICS_ONNX), None)
    for row in rows:
        if reference is not None:
            count = min(len(row.detections), len(reference.detections))
            score = map50(row.detections[:count], reference.detections[:count])
            row.agreement = None if np.isnan(score) else round(score, 4)
        peer = row.peer_fps or (baseline.fps if baseline is not None else 0.0)
        if peer > 0 and row.name != ULTRALYTICS_ONNX:
            row.ratio = round(row.fps / peer, 2)
        elif row.name == ULTRALYTICS_ONNX:
            row.ratio = 1.0


def evaluate_targets(rows: list[Row], http: list[HttpRow]) -> list[Target]:
    """Check this run against the issue's targets (ratios are against Ultralytics-ONNX at 640)."""
    by_name = {row.name: row for row in rows}

    def ratio_target(name: str, goal: float, min_agreement: float | None = None) -> Target:
        row = by_name.get(name)
        text = f">= {goal}x Ultralytics-ONNX" + (f", agreement >= {min_agreement}" if min_agreement else "")
        if row is None or row.ratio is None:
            return Target(name, text, "not measured", None)
        met = row.ratio >= goal and (min_agreement is None or (row.agreement or 0) >= min_agreement)
        value = f"{row.ratio:.2f}x" + (f", agreement {row.agreement}" if min_agreement else "")
        return Target(name, text, value + ("" if met else f" (gap {_gap(row, goal, min_agreement)})"), met)

    targets = [ratio_target("fp32-640", 2.0), ratio_target("int8-640", 3.0, 0.90), ratio_target("int8-320-de3", 15.0)]
    targets += latency_targets(rows)
    for item in http:
        name = f"http {item.variant} x{item.viewers}"
        goal = f">= {VIEWER_SHARE:.0%} of its fps with no viewer"
        if item.error or not item.idle_fps:
            targets.append(Target(name, goal, item.error or "not measured", None))
            continue
        share = item.server_fps / item.idle_fps
        targets.append(Target(name, goal, f"{share:.0%} ({item.server_fps:.1f} of {item.idle_fps:.1f} fps, "
                                          "server's frame counter)", share >= VIEWER_SHARE))
    return targets


def latency_targets(rows: list[Row]) -> list[Target]:
    """The pipelined producer's frame latency may exceed the serial loop's by one frame interval at most."""
    by_name = {row.name: row for row in rows}
    targets = []
    for row in rows:
        serial = by_name.get(f"{row.name} serial")
        if serial is None or row.latency_ms is None or serial.latency_ms is None or not row.fps:
            continue
        allowed = serial.latency_ms + 1000 / row.fps
        targets.append(Target(f"{row.name} latency", "<= serial + one frame interval",
                              f"{row.latency_ms:.1f} ms vs serial {serial.latency_ms:.1f} + {1000 / row.fps:.1f} ms; "
                              f"fps {row.fps:.1f} vs {serial.fps:.1f} serial", row.latency_ms <= allowed))
    return targets


def _gap(row: Row, goal: float, min_agreement: float | None) -> str:
    parts = []
    if row.ratio < goal:
        parts.append(f"{goal - row.ratio:.2f}x short")
    if min_agreement is not None and (row.agreement or 0) < min_agreement:
        parts.append(f"agreement {min_agreement - (row.agreement or 0):.3f} short")
    return ", ".join(parts)


def format_table(rows: list[Row], http: list[HttpRow], targets: list[Target], machine: dict) -> str:
    """Render the results as a plain-text table, the machine's CPU and flags above the figures and the targets."""
    where = machine_line(machine)
    stages = ("decode", "preprocess", "inference", "postprocess", "track", "draw", "encode")
    header = (f"{'variant':<22}" + "".join(f"{s[:7]:>9}" for s in stages)
              + f"{'fps':>8}{'latency':>9}{'peer fps':>10}{'vs UL-ONNX':>12}{'mAP50':>8}")
    legend = ("ms per frame (mean; tracked frames skip inference); rows ran interleaved, a segment at a time, "
              "each of ours between two Ultralytics-ONNX segments (peer fps: their mean); latency: median "
              "decode to publish")
    lines = [where, legend, header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"{row.stage_ms[s]:>9.1f}" if s in row.stage_ms else f"{'-':>9}" for s in stages)
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        agreement = f"{row.agreement:.3f}" if row.agreement is not None else "-"
        latency = f"{row.latency_ms:.1f}" if row.latency_ms is not None else "-"
        peer = f"{row.peer_fps:.1f}" if row.peer_fps is not None else "-"
        lines.append(f"{row.name:<22}{cells}{row.fps:>8.1f}{latency:>9}{peer:>10}{ratio:>12}{agreement:>8}")
    if http:
        cap = next((item.viewer_cap for item in http if item.viewer_cap is not None), None)
        lines += ["", "the real server over HTTP (run.py, as production starts it; realtime off); producer fps by "
                  "its own frame counter" + (f"; viewers capped at {cap:g} fps" if cap else ""),
                  f"{'variant':<24}{'viewers':>8}{'fps/viewer':>12}{'producer fps':>14}{'no viewer':>11}"]
        for item in http:
            idle = f"{item.idle_fps:.1f}" if item.idle_fps else "-"
            shown = item.error[:60] if item.error else f"{item.mean_fps:>12.1f}{item.server_fps:>14.1f}{idle:>11}"
            lines.append(f"{item.variant:<24}{item.viewers:>8}" + (f"  {shown}" if item.error else shown))
    lines += ["", f"targets (Ultralytics-ONNX = its default export, 640x640, same run) on {where}"]
    for target in targets:
        state = {True: "met", False: "GAP", None: "n/a"}[target.met]
        lines.append(f"  [{state:^4}] {target.name:<24} {target.goal:<42} {target.value}")
    return "\n".join(lines)


def draw_plot(rows: list[Row], path: Path) -> None:
    """Save a speed-vs-agreement scatter plot of every row, with the speed targets marked."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    baseline = next((r for r in rows if r.name == ULTRALYTICS_ONNX), None)
    if baseline is not None and baseline.fps > 0:
        for goal in (1.0, 2.0, 3.0, 15.0):
            axes.axvline(baseline.fps * goal, color="tab:gray", linestyle=":", linewidth=1)
            axes.annotate(f"{goal:g}x UL-ONNX", (baseline.fps * goal, 0.02), rotation=90, fontsize=7,
                          color="tab:gray", xycoords=("data", "axes fraction"))
    for index, row in enumerate(rows):
        agreement = row.agreement if row.agreement is not None else 0.0
        marker = "s" if row.kind == "ultralytics" else "o"
        color = "tab:gray" if row.kind == "ultralytics" else "tab:orange" if row.name.startswith("int8") else "tab:blue"
        label = row.name if row.agreement is not None else f"{row.name} (no agreement: fp32 saw nothing)"
        axes.scatter(row.fps, agreement, marker=marker, color=color, s=50)
        offset = (5, 4) if index % 2 == 0 else (5, -11)  # alternate, so neighbours' labels do not overlap
        axes.annotate(label, (row.fps, agreement), textcoords="offset points", xytext=offset, fontsize=8)
    axes.set_xscale("log")
    speeds = [row.fps for row in rows if row.fps > 0] or [1.0]
    axes.set_xlim(min(speeds) / 1.5, max(speeds) * 4)  # room for the labels on the right
    axes.set_ylim(-0.05, 1.08)
    axes.set_xlabel("end-to-end frames per second, decode to JPEG (log scale)")
    axes.set_ylabel(f"agreement: mAP50 vs {REFERENCE}")
    axes.set_title("speed vs agreement (squares: Ultralytics; blue: fp32; orange: int8)")
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def machine_summary(threads: int) -> dict:
    """Describe where the benchmark ran."""
    import onnxruntime  # noqa: PLC0415

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith(("model name", "Model"))), "")
    except OSError:
        pass
    return {"cpu": cpu or platform.processor(), "machine": platform.machine(), "cores": os.cpu_count(),
            "flags": cpu_flags(), "threads": threads, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__}


SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
               "asimd", "asimddp", "i8mm", "sve", "bf16")


def cpu_flags() -> list[str]:
    """The CPU features that decide which kernels ONNX Runtime runs (SIMD width, int8 dot products)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    found = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            found.update(line.split(":", 1)[1].split())
    return [flag for flag in SPEED_FLAGS if flag in found]


def machine_line(machine: dict) -> str:
    flags = " ".join(machine.get("flags") or []) or "unknown"
    return (f"{machine.get('cpu') or machine.get('machine')}, {machine.get('cores')} cores, flags: {flags}, "
            f"{machine.get('threads')} ORT threads, onnxruntime {machine.get('onnxruntime')}")


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="YOLOv8 detect weights, .pt or .onnx")
    parser.add_argument("--frames", type=int, default=300, help="frames per row (at most the video's)")
    parser.add_argument("--warmup", type=int, default=5, help="first frames of each row left out of timing")
    parser.add_argument("--segment", type=int, default=40,
                        help="frames a row runs before the next row's turn (rows interleave, so they share "
                             "the CPU's ups and downs)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    parser.add_argument("--imgsz", nargs="+", type=int, default=[640, 320])
    parser.add_argument("--detect-every", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--variants", nargs="+", type=Variant.parse, help="exact variants, instead of the grid")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--no-ultralytics", action="store_true", help="skip the Ultralytics rows")
    parser.add_argument("--http", nargs="*", type=Variant.parse,
                        default=[Variant("fp32", 640), Variant("int8", 320, 3)],
                        help="variants to stream from the real server (none: skip)")
    parser.add_argument("--serial", nargs="*", type=Variant.parse,
                        default=[Variant("fp32", 640), Variant("int8", 320, 3)],
                        help="variants (of those run) also run with the serial producer, to compare latency and fps "
                             "(none: skip)")
    parser.add_argument("--viewers", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--http-seconds", type=float, default=10.0)
    parser.add_argument("--retune", action="store_true", help="tune int8 again even if a tuning is cached")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "bench-results" / "cache")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="draw speed vs agreement here (PNG)")
    return parser.parse_args(argv)


def variants_from(args: argparse.Namespace) -> list[Variant]:
    """Return the variants to run, the reference (fp32 at 640, every frame) first."""
    grid = args.variants or [Variant(p, s, d) for p in args.precision for s in args.imgsz for d in args.detect_every]
    ordered = [Variant("fp32", 640)] + [v for v in grid if v != Variant("fp32", 640)]
    return ordered + [v for v in args.http if v not in ordered]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    video_info = probe_video(args.video)
    frames = min(args.frames, video_info.frames)
    args.cache.mkdir(parents=True, exist_ok=True)
    variants = variants_from(args)
    base = Settings(engine=ONNXRUNTIME, threads=args.threads)  # the rows name their precision: no auto here
    print(f"video {args.video.name}: {video_info.width}x{video_info.height}, {frames} frames per row; "
          f"model {args.model.name}; {len(variants)} variants; {args.threads} threads", file=sys.stderr)

    fp32 = our_onnx(args.model, args.cache)
    int8, tuning = (None, None)
    if any(v.precision == "int8" for v in variants):
        int8, tuning = int8_model(fp32, args.video, args.threads, args.retune)
    runtime, names = bench_runtime(fp32, int8), class_names(fp32)

    runs, peer = [], None
    if not args.no_ultralytics:
        if args.model.suffix == ".pt":
            runs.append(UltralyticsRun(ULTRALYTICS_PT, args.model, args.video, frames, base))
        exported = ultralytics_onnx(args.model, args.cache)
        peer = UltralyticsRun(ULTRALYTICS_ONNX, exported, args.video, frames, base)
    runs += [ProducerRun(v, runtime, args.video, names, frames, base) for v in variants]
    serial = [v for v in args.serial if v in variants]  # only variants this run measures anyway
    runs += [ProducerRun(v, runtime, args.video, names, frames, base, pipelined=False) for v in serial]
    rows = run_interleaved(runs, peer, args.warmup, args.segment)
    score_rows(rows)

    # The peer has finished (and freed its session) before our server starts: it never runs beside our stream.
    http = run_http(args.http, args.viewers, fp32, args.video, base, args.http_seconds) if args.http else []
    for item in http:
        item.viewer_cap = Config().viewer_max_fps
    targets = evaluate_targets(rows, http)

    machine = machine_summary(args.threads)
    print(format_table(rows, http, targets, machine))
    results = {
        "machine": machine,
        "video": {"name": args.video.name, **asdict(video_info), "frames_per_row": frames},
        "model": args.model.name,
        "settings": {"conf": base.conf, "iou": base.iou, "jpeg_quality": base.jpeg_quality, "warmup": args.warmup,
                     "segment": args.segment},
        "rows": [row.as_dict() for row in rows],
        "http": [item.as_dict() for item in http],
        "targets": [target.as_dict() for target in targets],
        "int8_tuning": tuning,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        draw_plot(rows, args.plot)
    return results


if __name__ == "__main__":
    main()
