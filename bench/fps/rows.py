"""The in-process rows: this server's producer and Ultralytics' predictor on the video, interleaved a segment at a time."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.fps.progress import ProgressLine
from bench.fps.records import Row, Variant
from server.models.runtime import ModelRuntime
from server.vision.pipeline import STAGES, FramePipeline
from server.vision.processing import Detections
from server.vision.settings import Settings
from server.vision.sources import Frame, FrameSource
from server.vision.stream import StreamRunner
from server.vision.tracker import Tracker

FONT_NAME = "DejaVuSans.ttf"  # matplotlib ships it; ultralytics finds it there instead of downloading Arial


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
