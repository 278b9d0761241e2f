"""The live source the user selected (or --camera), between POST /source and the stream that reads it."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

import cv2

from server.config import Config
from server.vision.settings import Settings
from server.vision.sources import (
    CAMERA_URL,
    IDLE_COUNTERS,
    Backoff,
    LiveSource,
    SourceInfo,
    SourceSpec,
    describe,
    parse_source,
    probe_source,
)
from server.vision.video import DEFAULT_FPS, VideoInfo

logger = logging.getLogger(__name__)

MIN_CALIBRATION_FRAMES = 8
CALIBRATION_CLIP = "live-calibration.avi"


class LiveChoice:
    """What to open, what the probe learned about it, and its reader while a stream runs."""

    def __init__(self, spec: SourceSpec, info: SourceInfo | None, config: Config):
        self.spec = spec
        self.info = info
        self.config = config
        self.reader: LiveSource | None = None
        self.on_samples: Callable[[], None] | None = None  # set by the service: int8 tuning may begin

    @classmethod
    def check(cls, url: str, config: Config) -> LiveChoice:
        """Parse and probe what the user typed; raise SourceRejected (HTTP 400) saying what was tried."""
        spec = parse_source(url, config.camera)
        return cls(spec, probe_source(spec, config.source_timeout), config)

    @classmethod
    def camera(cls, config: Config) -> LiveChoice:
        """The --camera command, selected at start-up without a probe (the camera may still be waking up)."""
        return cls(parse_source(CAMERA_URL, config.camera), None, config)

    def open(self, loop: bool = True) -> LiveSource:
        """Start reading; the stream producer gets this object as its frame source (a camera has no loop)."""
        self.reader = LiveSource(
            self.spec,
            self.info,
            stall_s=self.config.source_timeout,
            backoff=Backoff(cap=self.config.source_backoff_max),
            on_samples=self.on_samples,
        )
        return self.reader

    def calibration_clip(self, path: Path) -> Path | None:
        """Write the frames sampled from the running stream as a short video for int8 tuning; None if too few."""
        samples = self.reader.samples() if self.reader is not None else []
        if len(samples) < MIN_CALIBRATION_FRAMES:
            return None
        height, width = samples[-1].shape[:2]
        partial = path.with_name(path.stem + ".partial" + path.suffix)
        writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (width, height))
        try:
            for image in samples:
                if image.shape[:2] == (height, width):
                    writer.write(image)
        finally:
            writer.release()
        os.replace(partial, path)  # the tuner never sees a half-written clip
        return path

    def published(self, item, result, published_at: float) -> None:
        """The producer's tap after each published frame (the pipelined one passes a Detected holding it)."""
        if self.reader is not None:
            self.reader.published(getattr(item, "frame", item), published_at)

    def video_info(self) -> VideoInfo:
        info = self.info or SourceInfo(640, 480, DEFAULT_FPS)
        return VideoInfo(width=info.width, height=info.height, fps=info.fps, frames=0)

    @staticmethod
    def settings_for(settings: Callable[[], Settings]) -> Callable[[], Settings]:
        """The camera sets the pace: realtime pacing against a nominal fps would only add lag or drop frames."""
        return lambda: dataclasses.replace(settings(), realtime=False)

    def status(self) -> dict:
        if self.reader is not None:
            return self.reader.status()
        return {**describe(self.spec, self.info), **IDLE_COUNTERS}
