"""The per-frame work the stream does: detect (or track), draw, encode; timed stage by stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from server.vision import annotate
from server.vision.detector import Detector
from server.vision.processing import Detections
from server.vision.settings import Settings
from server.vision.video import Frame

STAGES = ("decode", "preprocess", "inference", "postprocess", "track", "draw", "encode")


class EncodeFailed(RuntimeError):
    """OpenCV could not encode a frame as JPEG."""


@dataclass
class FrameResult:
    jpeg: bytes
    detections: Detections
    timings_ms: dict[str, float] = field(default_factory=dict)
    detected: bool = True
    nonfinite: int = 0  # detector candidates dropped for NaN/infinite boxes or scores (before tracking)


class _Stopwatch:
    """Collect elapsed milliseconds per named stage."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def skip(self) -> None:
        """Start the next lap now, leaving the time since the last one uncounted."""
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + (now - self._last) * 1000
        self._last = now


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EncodeFailed("cv2.imencode failed")
    return buffer.tobytes()


def scaled(detections: Detections, factor: float) -> Detections:
    """Return detections with boxes multiplied by factor (for drawing on a resized frame)."""
    if factor == 1.0:
        return detections
    return Detections(
        detections.boxes * factor, detections.scores, detections.class_ids, detections.track_ids
    )


class FramePipeline:
    """Turn decoded frames into annotated JPEGs; the server's producer and the benchmark both use it."""

    def __init__(
        self,
        detector_for: Callable[[Settings], Detector],
        class_names: list[str],
        tracker_factory: Callable[[], object] | None = None,
    ):
        self.detector_for = detector_for
        self.class_names = class_names
        self.tracker_factory = tracker_factory
        self.tracker = tracker_factory() if tracker_factory else None
        self._last_detect_index: int | None = None
        self.nonfinite = 0
        self.precision = "fp32"  # of the model that ran last, which may lag the setting while int8 is tuned

    def reset(self) -> None:
        """Forget tracks, as when the video loops or the model changes."""
        self.tracker = self.tracker_factory() if self.tracker_factory else None
        self._last_detect_index = None

    def _should_detect(self, index: int, every: int) -> bool:
        if self.tracker is None or every <= 1 or self._last_detect_index is None:
            return True
        return index - self._last_detect_index >= every or index < self._last_detect_index

    def _detect(self, image: np.ndarray, settings: Settings, watch: _Stopwatch) -> Detections:
        detector = self.detector_for(settings)
        self.precision = detector.precision
        watch.skip()  # loading a new session after a settings change is not a per-frame cost
        classes = list(settings.classes) if settings.classes is not None else None
        return detector.detect(image, settings.imgsz, settings.conf, settings.iou, classes, lap=watch.lap)

    def _detect_or_track(self, frame: Frame, settings: Settings, watch: _Stopwatch) -> tuple[Detections, bool]:
        if self._should_detect(frame.index, settings.detect_every):
            detections = self._detect(frame.image, settings, watch)
            self.nonfinite = detections.nonfinite  # the tracker's Detections do not carry it
            if self.tracker is not None:
                detections = self.tracker.update(frame.image, detections)
            self._last_detect_index = frame.index
            watch.lap("track")
            return detections, True
        detections = self.tracker.propagate(frame.image)
        watch.lap("track")
        return detections, False

    def process(self, frame: Frame, settings: Settings, fps: float | None = None) -> FrameResult:
        """Detect (or track), draw and JPEG-encode one frame, timing each stage; fps (when given) goes on the overlay."""
        watch = _Stopwatch()
        self.nonfinite = 0
        detections, detected = self._detect_or_track(frame, settings, watch)
        image = annotate.fit_width(frame.image, settings.output_width)
        factor = image.shape[1] / frame.image.shape[1]
        if image is frame.image:
            image = image.copy()
        annotate.draw_detections(image, scaled(detections, factor), self.class_names)
        if fps is not None:
            overlay = annotate.Overlay(fps, self.precision, settings.imgsz, settings.detect_every, len(detections))
            annotate.draw_status(image, overlay)
        watch.lap("draw")
        jpeg = encode_jpeg(image, settings.jpeg_quality)
        watch.lap("encode")
        timings = {"decode": frame.decode_ms, **watch.timings}
        for stage in STAGES:
            timings.setdefault(stage, 0.0)
        return FrameResult(jpeg, detections, timings, detected, self.nonfinite)
