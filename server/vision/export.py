"""Export an uploaded video: every frame through the one detect path, flat out, into an annotated video that
browsers play and a CSV file with one row per frame and box.

The frames go through a Keyframer and FramePipeline.render, exactly as the stream's (same keyframes, detector,
tracker, interpolation, drawing), and
its JPEG is decoded back for the video writer: that costs a few ms a frame and keeps the export's pictures
the stream's. The codec is VP8 in WebM: this OpenCV build (opencv-python-headless 5.0, its FFmpeg without
x264 or OpenH264) cannot open an avc1/H264 writer at all, mp4v (MPEG-4 Part 2) does not play in browsers,
and VP9 took 63 ms a frame at 640x480 here against VP8's 15 ms.

Nothing is left half-written: both files are written under hidden temporary names and renamed into place
at the end; a cancel, a failure or a full disk removes them. FFmpeg's writer does not report a full disk,
so the free space is checked before the export and every CHECK_EVERY_FRAMES frames during it.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from server.storage import DiskSpace
from server.vision.keyframer import Keyframer
from server.vision.pipeline import Detected, FramePipeline
from server.vision.processing import Detections
from server.vision.settings import Settings
from server.vision.sources import FrameSource, VideoInfo

logger = logging.getLogger(__name__)

VIDEO_FOURCC = "VP80"
VIDEO_SUFFIX = ".webm"
CODEC = "VP8 (WebM)"
# engine and precision: what the network that found the box last ran on (fp32 until a tuning's verdict, say).
DETECTIONS_HEADER = ("frame", "time_s", "class_id", "class", "score", "x1", "y1", "x2", "y2", "track_id", "engine",
                     "precision")
PARTIAL_PREFIX = ".partial-"
EXPORT_JPEG_QUALITY = 95  # the stream's JPEG is the frame that gets encoded again: keep the first loss small
CHECK_EVERY_FRAMES = 25
READ_TIMEOUT_S = 0.5
SINK_QUEUE_FRAMES = 4  # frames waiting for the encoder: enough to ride out a slow one, little memory
# For the check before starting: OpenCV's VP8 averaged 0.008 bytes per pixel and frame on the generated
# test video and 0.095 on the demo video (29 KB a 640x480 frame); twice the larger, plus about ten boxes of
# 80 bytes per frame.
VIDEO_BYTES_PER_PIXEL = 0.2
ROW_BYTES_PER_FRAME = 10 * 80
MIN_HEADROOM_BYTES = 1024 * 1024

Progress = Callable[[int, int, float], None]  # frames done, frames in the video, seconds so far


class ExportCancelled(Exception):
    """The export was cancelled; nothing was kept."""


class ExportFailed(RuntimeError):
    """The export could not be written (not a disk-space problem: those are InsufficientStorage)."""


@dataclass(frozen=True)
class ExportResult:
    frames: int
    rows: int
    seconds: float
    fps: float  # frames per second the whole export reached (decode to written file)


def estimated_bytes(info: VideoInfo) -> int:
    """Bytes an export of a video like info takes at most, roughly, for the check before it starts."""
    per_frame = info.width * info.height * VIDEO_BYTES_PER_PIXEL + ROW_BYTES_PER_FRAME
    return int(max(1, info.frames) * per_frame)


def partial_path(path: Path) -> Path:
    return path.with_name(PARTIAL_PREFIX + path.name)


def export_settings(settings: Settings) -> Settings:
    """The settings an export runs with: the stream's, unpaced, played once, encoded at a higher quality."""
    return dataclasses.replace(settings, jpeg_quality=EXPORT_JPEG_QUALITY, realtime=False, loop=False)


def detection_rows(frame: int, time_s: float, detections: Detections, class_names: list[str],
                   ran: tuple[str, str] = ("", "")) -> list[tuple]:
    """One CSV row per box: frame number in the file, its time, class, score, box (source pixels), track id, and
    the engine and precision that ran."""
    rows = []
    for i in range(len(detections)):
        class_id = int(detections.class_ids[i])
        name = class_names[class_id] if class_id < len(class_names) else str(class_id)
        track = "" if detections.track_ids is None else int(detections.track_ids[i])
        x1, y1, x2, y2 = (round(float(v), 2) for v in detections.boxes[i])
        rows.append((frame, round(time_s, 3), class_id, name, round(float(detections.scores[i]), 4),
                     x1, y1, x2, y2, track, *ran))
    return rows


def export_video(
    video: Path,
    info: VideoInfo,
    pipeline: FramePipeline,
    settings: Settings,
    out_video: Path,
    out_detections: Path,
    space: DiskSpace,
    cancel: threading.Event,
    on_progress: Progress = lambda done, total, seconds: None,
) -> ExportResult:
    """Run every frame of video through pipeline with settings and write out_video and out_detections.

    Raises InsufficientStorage before starting, or during the export when the disk fills, ExportCancelled
    when cancel is set, ExportFailed when no video can be written; in every case neither file is left.
    """
    space.require(estimated_bytes(info))
    partials = (partial_path(out_video), partial_path(out_detections))
    try:
        with space.guard(estimated_bytes(info)):
            result = _run(video, info, pipeline, settings, partials, space, cancel, on_progress)
        os.replace(partials[0], out_video)
        os.replace(partials[1], out_detections)
        return result
    finally:
        for partial in partials:
            partial.unlink(missing_ok=True)


def _run(video: Path, info: VideoInfo, pipeline: FramePipeline, settings: Settings, partials: tuple[Path, Path],
         space: DiskSpace, cancel: threading.Event, on_progress: Progress) -> ExportResult:
    settings = export_settings(settings)
    fps = info.fps
    source = FrameSource(video, loop=False)
    sink = VideoSink(partials[0], fps)
    keyframer = Keyframer(pipeline, fps)
    done = rows = 0
    started = time.perf_counter()

    def write(items: list[Detected]) -> None:
        nonlocal done, rows
        for item in items:
            result = pipeline.render(item, settings)
            sink.put(result.jpeg)
            frame = result.frame
            found = detection_rows(frame.position, frame.position / fps, result.detections, pipeline.class_names,
                                   (pipeline.engine, pipeline.precision))
            table.writerows(found)
            done, rows = done + 1, rows + len(found)
            if done % CHECK_EVERY_FRAMES == 0:
                handle.flush()
                _check_headroom(space, partials, done)
                on_progress(done, max(info.frames, done), time.perf_counter() - started)

    try:
        with partials[1].open("w", newline="") as handle:
            table = csv.writer(handle)
            table.writerow(DETECTIONS_HEADER)
            while (frame := _next_frame(source, cancel)) is not None:
                write(keyframer.push(frame, settings))
            write(keyframer.flush(settings))
        sink.finish()
    finally:
        source.close()
        sink.close()
    if done == 0:
        raise ExportFailed("the video has no frame this server can decode")
    seconds = time.perf_counter() - started
    return ExportResult(done, rows, round(seconds, 2), round(done / seconds, 2) if seconds > 0 else 0.0)


class VideoSink:
    """Decode the annotated JPEGs and VP8-encode them on a thread of its own, so encoding overlaps detection."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=SINK_QUEUE_FRAMES)
        self._writer: cv2.VideoWriter | None = None
        self._thread = threading.Thread(target=self._write_all, name="export-writer", daemon=True)
        self._thread.start()

    def put(self, jpeg: bytes | None) -> None:
        """Queue one frame (None: the end); raise what the writer failed with, if it did."""
        while self._thread.is_alive():
            try:
                self._queue.put(jpeg, timeout=READ_TIMEOUT_S)
                break
            except queue.Full:
                continue
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        """Write what is queued and close the file; raise what the writer failed with, if it did."""
        self.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the writer, whatever it was doing (a cancel, a failure), and wait for it."""
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()  # make room for the end marker
            except queue.Empty:
                pass
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                continue
            self._thread.join(READ_TIMEOUT_S)

    def _write_all(self) -> None:
        try:
            while (jpeg := self._queue.get()) is not None:
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    raise ExportFailed("an annotated frame could not be decoded")
                self._writer = self._writer or _open_writer(self.path, self.fps, image)
                self._writer.write(image)
        except BaseException as exc:  # handed to the export's thread, which stops and reports it
            self.error = exc
        finally:
            if self._writer is not None:
                self._writer.release()


def _next_frame(source: FrameSource, cancel: threading.Event):
    """The next decoded frame, None at the end; raise ExportCancelled as soon as cancel is set."""
    while not cancel.is_set():
        try:
            return source.read(timeout=READ_TIMEOUT_S)
        except queue.Empty:
            continue
    raise ExportCancelled("the export was cancelled")


def _open_writer(path: Path, fps: float, first: np.ndarray) -> cv2.VideoWriter:
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise ExportFailed(f"this server's OpenCV cannot write {CODEC} video")
    return writer


def _check_headroom(space: DiskSpace, partials: tuple[Path, Path], done: int) -> None:
    """Raise InsufficientStorage unless the next CHECK_EVERY_FRAMES frames fit, twice over, at the rate so far."""
    written = sum(p.stat().st_size for p in partials if p.exists())
    space.require(max(MIN_HEADROOM_BYTES, 2 * written * CHECK_EVERY_FRAMES // done))
