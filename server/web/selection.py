"""Which source a stream reads: the uploaded video, or the live source chosen by --camera or POST /source."""

from __future__ import annotations

from collections.abc import Callable

from server.config import Config
from server.vision.sources.choice import FileChoice, LiveChoice, SourceChoice
from server.vision.sources.live import LiveOptions
from server.web.uploads import StoredVideo


class SourceSelection:
    """The live choice, if any (it replaces the uploaded video until a video is uploaded again)."""

    def __init__(self, config: Config):
        self.options = LiveOptions(config.camera, config.source_timeout, config.source_backoff_max)
        # Called when a live stream has sampled enough frames to tune on; the service sets it.
        self.on_calibration_ready: Callable[[], None] = lambda: None
        self.live: LiveChoice | None = LiveChoice.camera(self.options, self._calibration_ready) if config.camera else None

    def _calibration_ready(self) -> None:
        self.on_calibration_ready()

    def probe(self, url: str) -> LiveChoice:
        """Parse and probe what the user typed (up to source_timeout); raise SourceRejected saying what was tried."""
        return LiveChoice.check(url, self.options, self._calibration_ready)

    def choose(self, live: LiveChoice) -> None:
        """Read this live source from the next Start on (it replaces the uploaded video)."""
        self.live = live

    def use_uploaded_video(self) -> None:
        """Read the uploaded video again (a new upload, or a reset, ends the live choice)."""
        self.live = None

    def for_stream(self, video: StoredVideo | None) -> SourceChoice | None:
        """What Start reads: the live choice, else the uploaded video, else nothing."""
        if self.live is not None:
            return self.live
        return FileChoice(video.path) if video is not None else None

    def status(self) -> dict | None:
        return self.live.status() if self.live is not None else None
