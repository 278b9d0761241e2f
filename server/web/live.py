"""The live source the user selected (or --camera), between POST /source and the stream that reads it."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

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


class LiveChoice:
    """What to open, what the probe learned about it, and its reader while a stream runs."""

    def __init__(self, spec: SourceSpec, info: SourceInfo | None, config: Config):
        self.spec = spec
        self.info = info
        self.config = config
        self.reader: LiveSource | None = None

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
        )
        return self.reader

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
