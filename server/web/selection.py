"""Which source a stream reads: the uploaded video, or the live source chosen by --camera or POST /source."""

from __future__ import annotations

from collections.abc import Callable

from server.config import Config
from server.vision.sources.choice import FileChoice, LiveChoice, SourceChoice
from server.web.uploads import StoredVideo


class SourceSelection:
    """The live choice, if any (it replaces the uploaded video until a video is uploaded again)."""

    def __init__(self, config: Config, on_calibration_ready: Callable[[], None]):
        self.config = config
        self.on_calibration_ready = on_calibration_ready  # a live stream sampled enough frames for int8
        self.live: LiveChoice | None = LiveChoice.camera(config, on_calibration_ready) if config.camera else None

    def probe(self, url: str) -> LiveChoice:
        """Parse and probe what the user typed (up to source_timeout); raise SourceRejected saying what was tried."""
        return LiveChoice.check(url, self.config, self.on_calibration_ready)

    def for_stream(self, video: StoredVideo | None) -> SourceChoice | None:
        """What Start reads: the live choice, else the uploaded video, else nothing."""
        if self.live is not None:
            return self.live
        return FileChoice(video.path) if video is not None else None

    def status(self) -> dict | None:
        return self.live.status() if self.live is not None else None
