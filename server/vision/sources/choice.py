"""The source a stream will read: an uploaded video file or a live source, before and while it is open.

A choice opens its Source for the producer and answers for it between streams: what status shows, and
the frames a model build calibrates on (a file anytime; a live source once a stream has sampled enough).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from server.vision.sources.base import CALIBRATION_FRAMES
from server.vision.sources.connections import probe_source
from server.vision.sources.file import FrameSource, sample_frames
from server.vision.sources.live import IDLE_COUNTERS, Backoff, LiveOptions, LiveSource
from server.vision.sources.spec import CAMERA_URL, SourceInfo, SourceSpec, describe, parse_source

# One frame decoded ahead is enough to hide decoding (it is faster than detection); more would only
# make each frame older by the time it is shown.
FILE_AHEAD = 1


class FileChoice:
    """A video file on disk."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.label = self.path.name

    def open(self, loop: bool) -> FrameSource:
        return FrameSource(self.path, loop=loop, ahead=FILE_AHEAD)

    def status(self) -> dict | None:
        """Status shows a file as the video, not as a source."""
        return None

    @property
    def calibration_ready(self) -> bool:
        return True

    def calibration_frames(self, count: int = CALIBRATION_FRAMES) -> list[np.ndarray]:
        return sample_frames(self.path, count)


class LiveChoice:
    """What to open, what the probe learned about it, and its reader while a stream runs."""

    def __init__(self, spec: SourceSpec, info: SourceInfo | None, options: LiveOptions,
                 on_calibration_ready: Callable[[], None] | None = None):
        self.spec = spec
        self.info = info
        self.options = options
        self.label = spec.label
        self.on_calibration_ready = on_calibration_ready  # once per stream, on the reader's thread
        self.reader: LiveSource | None = None

    @classmethod
    def check(cls, url: str, options: LiveOptions,
              on_calibration_ready: Callable[[], None] | None = None) -> LiveChoice:
        """Parse and probe what the user typed; raise SourceRejected (HTTP 400) saying what was tried."""
        spec = parse_source(url, options.camera)
        return cls(spec, probe_source(spec, options.timeout_s), options, on_calibration_ready)

    @classmethod
    def camera(cls, options: LiveOptions, on_calibration_ready: Callable[[], None] | None = None) -> LiveChoice:
        """The --camera command, selected at start-up without a probe (the camera may still be waking up)."""
        return cls(parse_source(CAMERA_URL, options.camera), None, options, on_calibration_ready)

    def open(self, loop: bool = True) -> LiveSource:
        """Start reading (a camera has no loop); the stream producer reads the returned source."""
        self.reader = LiveSource(
            self.spec,
            self.info,
            stall_s=self.options.timeout_s,
            backoff=Backoff(cap=self.options.backoff_max_s),
            on_calibration_ready=self.on_calibration_ready,
        )
        return self.reader

    def status(self) -> dict:
        if self.reader is not None:
            return self.reader.status()
        return {**describe(self.spec, self.info), **IDLE_COUNTERS}

    @property
    def calibration_ready(self) -> bool:
        """Whether the running (or last) stream sampled enough frames to calibrate on."""
        return self.reader is not None and self.reader.calibration_ready

    def calibration_frames(self, count: int = CALIBRATION_FRAMES) -> list[np.ndarray]:
        return self.reader.calibration_frames(count) if self.reader is not None else []


SourceChoice = FileChoice | LiveChoice
