"""The per-frame work the stream does: detect (or track), draw, encode; timed stage by stage.

The work is split in two halves so the producer can run them on different threads:
`detect` (preprocess, inference, postprocess, track) and `render` (draw, encode).
`process` runs both in a row, as the benchmark's serial rows and the serial producer do.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import cv2
import numpy as np

from server.vision import annotate
from server.vision.detector import Detector
from server.vision.processing import Detections
from server.vision.settings import Settings
from server.vision.sources.base import Frame

STAGES = ("decode", "preprocess", "inference", "postprocess", "track", "draw", "encode")
RAN_KEPT = 32  # changes of what ran kept per pipeline (a slider dragged back and forth must not grow it forever)


class EncodeFailed(RuntimeError):
    """OpenCV could not encode a frame as JPEG."""


@dataclass(frozen=True)
class Span:
    """One stage of one frame: what ran, and when (time.perf_counter seconds)."""

    stage: str
    start: float
    end: float
    thread: str = ""


class Stopwatch:
    """Collect elapsed milliseconds per named stage, and the spans they came from."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.spans: list[Span] = []
        self.thread = threading.current_thread().name
        self._last = time.perf_counter()

    def skip(self) -> None:
        """Start the next lap now, leaving the time since the last one uncounted."""
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + (now - self._last) * 1000
        self.spans.append(Span(stage, self._last, now, self.thread))
        self._last = now


class FrameTrace(Protocol):
    """Where a frame's spans go once it is published (trace.TraceRecorder); the pipeline only carries it along."""

    def add_frame(self, index: int, spans: list[Span], published_at: float) -> None: ...


@dataclass(frozen=True)
class Detected:
    """One frame on its way through the stages: the detect half fills in its boxes and costs, render its JPEG."""

    frame: Frame
    detections: Detections
    detected: bool  # False: the tracker moved the boxes, the network did not run
    timings_ms: dict[str, float]  # per stage; after render every stage of STAGES is there
    spans: list[Span]
    nonfinite: int = 0  # detector candidates dropped for NaN/infinite boxes or scores (before tracking)
    jpeg: bytes = b""  # the annotated frame, once rendered
    trace: FrameTrace | None = None  # the trace that was recording when its detection began


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


@dataclass(frozen=True)
class Ran:
    """What the network ran on from one frame on, until the next change: recorded as it happens, not as set."""

    frame: int  # index of the first frame it ran on
    at: float  # time.time() then
    engine: str
    precision: str
    threads: int
    input_hw: tuple[int, int]  # the network's input, aspect-true for the frame and imgsz
    detect_every: int | str  # or "auto"

    def as_dict(self) -> dict:
        return {"frame": self.frame, "at": round(self.at, 3), "engine": self.engine, "precision": self.precision,
                "threads": self.threads, "input": list(self.input_hw), "detect_every": self.detect_every}


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
        self.precision = "fp32"  # of the model that ran last, which may lag the setting while int8 is tuned
        self.engine = "onnxruntime"  # likewise: auto runs ONNX Runtime until the device has timed the engines
        self.profiling: Detector | None = None  # a profiling session a trace runs in place of the usual one
        self._ran: list[Ran] = []  # the changes of what ran, oldest first (RAN_KEPT at most)

    @property
    def ran(self) -> list[dict]:
        """What ran, from which frame on: one entry per change of engine, precision, threads, input or interval."""
        return [entry.as_dict() for entry in list(self._ran)]

    def _record(self, index: int, detector: Detector, image: np.ndarray, settings: Settings) -> None:
        input_hw = detector.input_hw(image.shape[:2], settings.imgsz)
        now = (detector.engine.name, detector.precision, detector.threads, tuple(input_hw), settings.detect_every)
        last = self._ran[-1] if self._ran else None
        if last is None or now != (last.engine, last.precision, last.threads, last.input_hw, last.detect_every):
            self._ran = [*self._ran[-(RAN_KEPT - 1):], Ran(index, time.time(), *now)]

    def reset(self) -> None:
        """Forget tracks, as when the video loops or the model changes."""
        self.tracker = self.tracker_factory() if self.tracker_factory else None
        self._last_detect_index = None

    def _should_detect(self, index: int, every: int) -> bool:
        if self.tracker is None or not isinstance(every, int) or every <= 1 or self._last_detect_index is None:
            return True
        return index - self._last_detect_index >= every or index < self._last_detect_index

    def _infer(self, index: int, image: np.ndarray, settings: Settings, watch: Stopwatch) -> Detections:
        detector = self.profiling or self.detector_for(settings)
        self.precision, self.engine = detector.precision, detector.engine.name
        self._record(index, detector, image, settings)
        watch.skip()  # loading a new session after a settings change is not a per-frame cost
        classes = list(settings.classes) if settings.classes is not None else None
        return detector.detect(image, settings.imgsz, settings.conf, settings.iou, classes, lap=watch.lap)

    def detect(self, frame: Frame, settings: Settings, trace: FrameTrace | None = None,
               network: bool | None = None) -> Detected:
        """The detect half: run the network (or only the tracker, between detections) on one frame.

        network says whether the network runs (a Keyframer decides); None: every detect_every-th frame.
        """
        watch = Stopwatch()
        detected = self._should_detect(frame.index, settings.detect_every) if network is None else network
        detected = detected or self.tracker is None
        nonfinite = 0
        if detected:
            detections = self._infer(frame.index, frame.image, settings, watch)
            nonfinite = detections.nonfinite  # the tracker's Detections do not carry it
            if self.tracker is not None:
                detections = self.tracker.update(frame.image, detections)
            self._last_detect_index = frame.index
        else:
            detections = self.tracker.propagate(frame.image)
        watch.lap("track")
        return Detected(frame, detections, detected, watch.timings, watch.spans, nonfinite, trace=trace)

    def render(self, item: Detected, settings: Settings, fps: float | None = None) -> Detected:
        """The render half: draw the boxes (and status line) and JPEG-encode the frame."""
        watch = Stopwatch()
        frame = item.frame
        image = annotate.fit_width(frame.image, settings.output_width)
        factor = image.shape[1] / frame.image.shape[1]
        if image is frame.image:
            image = image.copy()
        annotate.draw_detections(image, scaled(item.detections, factor), self.class_names)
        if fps is not None:
            overlay = annotate.Overlay(fps, self.precision, settings.imgsz, settings.detect_every, len(item.detections))
            annotate.draw_status(image, overlay)
        watch.lap("draw")
        jpeg = encode_jpeg(image, settings.jpeg_quality)
        watch.lap("encode")
        timings = {"decode": frame.decode_ms, **item.timings_ms, **watch.timings}
        for stage in STAGES:
            timings.setdefault(stage, 0.0)
        return replace(item, jpeg=jpeg, timings_ms=timings, spans=[*item.spans, *watch.spans])

    def process(self, frame: Frame, settings: Settings, fps: float | None = None) -> Detected:
        """Detect (or track), draw and JPEG-encode one frame, timing each stage; fps (when given) goes on the overlay."""
        return self.render(self.detect(frame, settings), settings, fps)
