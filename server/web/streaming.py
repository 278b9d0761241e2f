"""The stream's lifecycle for the service: start a producer on a source, stop it, admit viewers, record traces."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from server.config import Config
from server.vision.pipeline import FramePipeline
from server.vision.settings import Settings
from server.vision.sources.choice import SourceChoice
from server.vision.stats import StreamStats
from server.vision.stream import StreamRunner
from server.vision.trace import TraceBusy

logger = logging.getLogger(__name__)

RESERVED_THREADS = 4  # HTTP workers kept free of viewers for the page's API calls


class Busy(RuntimeError):
    """The request conflicts with what the server is doing (HTTP 409)."""


class TooManyViewers(RuntimeError):
    """Every viewer slot is taken (HTTP 503)."""


class StreamControl:
    """At most one running stream (a StreamRunner), the error the last one ended with, and its viewers."""

    def __init__(self, config: Config):
        self.max_viewer_fps = config.viewer_max_fps
        # Each viewer holds an HTTP worker thread; keep some for the page's API calls.
        self.max_viewers = max(1, config.http_threads - RESERVED_THREADS)
        self.runner: StreamRunner | None = None
        self.last_error: str | None = None

    @property
    def streaming(self) -> bool:
        """True while any of the producer's threads is alive, also while it is still stopping."""
        runner = self.runner
        return runner is not None and any(thread.is_alive() for thread in runner.threads())

    @property
    def stopping(self) -> bool:
        return self.streaming and self.runner.stop_event.is_set()

    def start(self, choice: SourceChoice, pipeline: FramePipeline, settings: Callable[[], Settings],
              on_publish: Callable | None = None, on_end: Callable[[], None] | None = None) -> None:
        """Start a producer reading choice's source; the source says how it is paced.

        on_publish is the producer's tap after each published frame (the events'); on_end runs when it ends.
        """
        self.last_error = None

        def ended(error: str | None) -> None:
            if on_end is not None:
                on_end()
            self._ended(error)

        self.runner = StreamRunner(choice.open, pipeline, settings, ended, max_viewer_fps=self.max_viewer_fps,
                                   on_publish=on_publish)
        self.runner.start()

    def _ended(self, error: str | None) -> None:
        if error:
            self.last_error = error

    def stop(self) -> None:
        """Stop the stream; the producer is joined with a timeout."""
        runner = self.runner
        if runner is not None and self.streaming:
            runner.stop()
            logger.info("stream stopped after %d frames", runner.hub.published)  # stop cleared the stats

    def forget(self) -> None:
        """Drop a finished stream's numbers and error (its files are going)."""
        self.runner = None
        self.last_error = None

    def ran(self) -> list[dict]:
        """What the running (or last) stream's network ran on, from which frame on (FramePipeline.ran)."""
        runner = self.runner
        return runner.pipeline.ran if runner else []

    def stats(self) -> dict:
        runner = self.runner
        return runner.stats.snapshot(runner.hub.viewers) if runner else StreamStats().snapshot(0)

    def trace(self, frames: int, onnx_profile: bool = False) -> dict:
        """Record the next frames' stage spans as a Chrome trace; raise Busy when not streaming."""
        runner = self.runner
        if runner is None or not self.streaming:
            raise Busy("the stream is not running: start it, then record a trace")
        try:
            return runner.record_trace(frames, onnx_profile)
        except TraceBusy as exc:
            raise Busy(str(exc)) from None

    def viewer_frames(self) -> Iterator[bytes]:
        """Return a multipart generator for one viewer; raise Busy when not streaming or full."""
        runner = self.runner
        if runner is None or not self.streaming or runner.stop_event.is_set():
            raise Busy("the stream is not running: POST /stream/start first")
        if runner.hub.viewers >= self.max_viewers:
            raise TooManyViewers(f"too many viewers ({runner.hub.viewers}); close a tab or raise --threads")
        return runner.hub.frames()
