"""The detection service: what the routes talk to. It routes requests to its collaborators and owns lifetimes:
a stream's start and its one end, what a change must stop first. The server's ordered start and stop call it
(server.web.lifecycle)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from server.config import Config
from server.demo import is_demo
from server.events.recorder import EventRecorder, EventSession, chained
from server.events.store import EventQuery
from server.jobs import JobBoard
from server.models.acceptance import AcceptedModel, accept_model
from server.models.current import CurrentModel
from server.models.tuning.job import EngineTiming
from server.outputs import Outputs
from server.outputs.adapter import CountsTap
from server.vision.export_job import ExportRunning, Exports
from server.vision.pipeline import STAGES, FramePipeline
from server.vision.sources import DEFAULT_FPS, LiveChoice
from server.vision.tracker import Tracker
from server.web.selection import SourceSelection
from server.web.streaming import Busy, StreamControl, TooManyViewers
from server.web.uploads import UploadStore

logger = logging.getLogger(__name__)

STOP_TIMING_WAIT_S = 10.0  # at a stop (the route's, and the server's)

__all__ = ["Busy", "Collaborators", "DetectionService", "TooManyViewers", "described"]

PENDING = {"video": "a video upload", "model": "a model upload", "reset": "a reset", "source": "a source change"}


@dataclass(frozen=True)
class Collaborators:
    """What the service routes to, built by the app factory (server.web.app.build_collaborators)."""

    store: UploadStore
    jobs: JobBoard
    timing: EngineTiming
    model: CurrentModel
    sources: SourceSelection
    stream: StreamControl
    exports: Exports
    events: EventRecorder  # --no-events: a recorder whose settings record nothing (its stored events still show)
    outputs: Outputs  # webhook and MQTT; Outputs() when none is configured: every call a no-op


class DetectionService:
    """What the routes talk to; every public method is safe to call from any request thread.

    The lock guards swapping the collaborators' state and is only held to check and swap: probing a video or a
    source, accepting a model, stopping a stream and joining the engine timing all run outside it. While an upload, a
    source change or a reset is under way its kind is in _pending, and whatever would conflict with it (start,
    another of them) is refused with Busy instead of waiting.
    """

    def __init__(self, config: Config, parts: Collaborators):
        self.config = config
        self.store, self.jobs, self.timing, self.model = parts.store, parts.jobs, parts.timing, parts.model
        self.sources, self.stream, self.exports = parts.sources, parts.stream, parts.exports
        self.events, self.outputs = parts.events, parts.outputs
        self.sources.on_calibration_ready = self._calibration_ready
        self._lock = threading.RLock()
        self._pending: set[str] = set()  # kinds of PENDING under way

    # -- state -------------------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        """True while any of the producer's threads is alive, also while it is still stopping."""
        return self.stream.streaming

    def refuse_while_busy(self, action: str) -> None:
        """Raise Busy while a stream runs or an upload, source change or reset is under way."""
        if self.streaming:
            raise Busy(f"cannot {action} while streaming: stop the stream first")
        if self.exports.running():
            raise Busy(f"cannot {action} while the video is being exported: wait for it or cancel it")
        pending = sorted(self._pending)
        if pending:
            raise Busy(f"cannot {action} while {PENDING[pending[0]]} is being processed; try again when it is done")

    def _begin(self, kind: str, action: str) -> None:
        """Check that nothing conflicts with this change and mark it under way (under the lock)."""
        with self._lock:
            self.refuse_while_busy(action)
            self._pending.add(kind)

    def _end(self, kind: str) -> None:
        with self._lock:
            self._pending.discard(kind)

    def status(self) -> dict:
        """Everything the page shows, as JSON-ready data; files vanishing meanwhile (a reset) are shown as gone."""
        video, model = self.store.video, self.store.model
        return {
            "streaming": self.streaming,
            "video": described(video),
            "model": self.model.described(described(model)),
            "settings": self.model.settings.as_dict(),
            "options": self.model.options(),
            "stats": self.stream.stats(),
            "stages": list(STAGES),  # the stages of stats.latency_ms, in the order a frame passes them
            "ran": self.stream.ran(),  # what the running (or last) stream's frames ran on, from which frame
            "job": self.jobs.current(),
            "error": self.stream.last_error or self.timing.error,
            "precision": self.model.timing_status(),
            "restored": self.store.restored,
            "source": self.sources.status(),
            "storage": self.store.space.status(),
            "demo": is_demo(video, model),
            "events": self.events.status(),
            "outputs": self.outputs.status(),
        }

    def restore(self) -> None:
        """At start-up (a lifecycle step): take back the video and model a previous run stored."""
        model = self.store.readopt()
        if model is not None:
            self.model.adopt(model.onnx_path, model.info)

    # -- uploads -----------------------------------------------------------------------------
    def add_video(self, upload: Path, filename: str) -> dict:
        """Probe and keep a video (outside the lock); a running engine timing is cancelled first."""
        self._begin("video", "replace the video")
        try:
            self._cancel_timing("a new video was uploaded")
            video = self.store.add_video(upload, filename).as_dict()
            with self._lock:
                self.sources.use_uploaded_video()
            return video
        finally:
            self._end("video")

    def add_model(self, upload: Path, filename: str) -> dict:
        """Check, convert and trial-run new weights outside the lock; then swap them in."""
        self._begin("model", "replace the model")
        if not self.jobs.begin("convert", "checking the weights"):
            self._end("model")
            raise Busy("another model is being converted; wait for it to finish")
        try:
            self._cancel_timing("a new model was uploaded")
            stored, ncnn = self.store.add_model(upload, filename, self._accept)
            with self._lock:
                self.model.adopt(stored.onnx_path, stored.info, ncnn)
            return self.model.described(stored.as_dict())
        finally:
            self.jobs.end("convert")
            self._end("model")

    def _accept(self, upload: Path, suffix: str, sha256: str | None) -> AcceptedModel:
        """Check, convert and trial-run weights and write their NCNN copy, showing progress as the convert job."""
        return accept_model(upload, suffix, self.store.cache_folder(), self.store.trial, self.store.space,
                            self.config.convert_timeout,
                            lambda stage, progress, message: self.jobs.update("convert", stage, progress, message),
                            sha256)

    def reset(self) -> list[str]:
        """Cancel and join the engine timing and an export, then delete every upload, derived file and export."""
        if not self.exports.cancel():
            raise Busy("the export is still stopping; try again in a moment")
        self._begin("reset", "reset")
        try:
            self._cancel_timing("reset")
            with self._lock:
                self.model.forget()
                self.stream.forget()  # a finished stream's numbers go with its files
                self.sources.use_uploaded_video()
                self.events.clear()
                return self.store.reset() + self.exports.delete()
        finally:
            self._end("reset")

    # -- settings ----------------------------------------------------------------------------
    def update_settings(self, changes: dict) -> dict:
        """Validate and apply a settings change; the producer picks it up on its next frame."""
        with self._lock:
            self.model.update(changes)
            self._time_if_wanted()
            return self.model.settings.as_dict()

    def _time_if_wanted(self) -> None:
        """Time the engines (and tune int8) on frames from the source Start reads, once it has them (a live one
        after sampling a while): one job, whose verdict engine auto runs and whose int8 model precision int8 runs."""
        source = self.sources.for_stream(self.store.video)
        if source is not None and source.calibration_ready and not self._pending:
            self.model.time_engines(source.calibration_frames)

    def _calibration_ready(self) -> None:
        """A live stream sampled enough frames: tune now if it was asked for before they came.

        Called on the live reader's thread, which a stopping stream waits for: so no service lock here; the
        timing itself runs on EngineTiming's own thread, which stop, reset and uploads cancel and join.
        """
        if self.streaming:
            self._time_if_wanted()

    def _cancel_timing(self, why: str) -> None:
        """Cancel the engine timing and wait for it: it reads the files about to change."""
        if self.timing.building():
            logger.info("cancelling the engine timing: %s", why)
        if not self.timing.cancel():
            raise Busy("the engine timing is still stopping; try again in a moment")

    # -- export ------------------------------------------------------------------------------
    def start_export(self) -> dict:
        """Start exporting the uploaded video with the current settings (a job); raise Busy when it cannot run now."""
        with self._lock:
            self.refuse_while_busy("export")
            video, model = self.store.video, self.store.model
            if video is None or model is None:
                missing = " and ".join(n for n, v in (("a video", video), ("a model", model)) if v is None)
                raise Busy(f"upload {missing} before exporting (a live source cannot be exported)")
            try:
                return self.exports.start(video.path, video.info, self._pipeline(), self.model.settings,
                                          video.path.stem, runs=self.model.active())
            except ExportRunning as exc:
                raise Busy(str(exc)) from None

    def export_status(self) -> dict:
        return self.exports.status()

    def stop_export(self) -> dict:
        """Cancel a running export and wait for it (its partial files are removed); return the export's state."""
        if not self.exports.cancel():
            logger.warning("the export did not stop; its partial files are removed at the next start")
        return self.exports.status()

    def export_file(self, kind: str) -> tuple[Path, str] | None:
        """The finished export's file of this kind ("video" or "detections") and its download name, or None."""
        return self.exports.file_for(kind)

    def _pipeline(self) -> FramePipeline:
        return FramePipeline(self.model.runtime.detector_for, self.model.info.classes, tracker_factory=Tracker)

    # -- events ------------------------------------------------------------------------------
    def find_events(self, query: EventQuery) -> list[dict]:
        """Stored events matching the query, newest first."""
        return self.events.store.query(query)

    def event_overview(self) -> dict:
        """The classes stored events are of, and the recorder's state (what the events list shows beside them)."""
        return {"classes": self.events.store.classes(), "status": self.events.status()}

    def event(self, event_id: int) -> dict | None:
        return self.events.store.get(event_id)

    def event_picture(self, event_id: int, kind: str) -> Path | None:
        """The file of an event's snapshot or crop, or None when there is none (yet)."""
        return self.events.store.picture(event_id, kind)

    def clear_events(self) -> int:
        """Delete every stored event; a running stream keeps recording new ones. Return how many there were."""
        return self.events.clear()

    # -- source and stream -------------------------------------------------------------------
    def select_source(self, url: str) -> dict:
        """Check and probe a live source, then make it the one Start reads (replacing an uploaded video)."""
        self._begin("source", "change the source")  # before probing: a webcam in use cannot be opened twice
        try:
            choice = self.sources.probe(url)  # outside the lock: probing takes up to source_timeout
            self._cancel_timing("a live source replaces the video")
            with self._lock:
                self.store.drop_video()
                self.sources.choose(choice)
        finally:
            self._end("source")
        logger.info("live source selected: %s", choice.label)
        return choice.status()

    def start(self) -> None:
        with self._lock:
            if self.stream.stopping:
                raise Busy("the previous stream is still stopping; try again in a moment")
            if self.streaming:
                return
            self.refuse_while_busy("start the stream")
            model, choice = self.store.model, self.sources.for_stream(self.store.video)
            if choice is None or model is None:
                needed = (("a video (or choose a live source)", choice), ("a model", model))
                missing = " and ".join(n for n, v in needed if v is None)
                raise Busy(f"upload {missing} before starting the stream")
            self._time_if_wanted()
            classes = model.info.classes
            live = isinstance(choice, LiveChoice)
            fps = (choice.info.fps if choice.info else DEFAULT_FPS) if live else self.store.video.info.fps
            session = self.events.begin(choice.label, classes, fps, live)
            self.stream.start(choice, self._pipeline(), self.model.current,
                              on_publish=chained(session.tap, self._counts_tap(classes)),
                              on_end=lambda: self._stream_ended(session))
            logger.info("stream started: %s with %s", choice.label, model.path.name)

    def _counts_tap(self, class_names: list[str]) -> CountsTap | None:
        """The tap that sends per-class counts of tracked objects to the outputs (None when none is configured)."""
        if not self.outputs.configured:  # no tap at all: nothing to count per frame
            return None
        self.outputs.classes(class_names)
        return CountsTap(self.outputs.counts, class_names)

    def _stream_ended(self, session: EventSession) -> None:
        """The one end of every stream, whatever ended it: Stop, the video's end with loop off, a source or render
        failure, shutdown. Runs on the producer's thread once its stages are done (so no tap runs after it): the
        open events close (saved, and announced to the outputs), and every output hears that nothing is tracked
        any more (MQTT: each class OFF and 0, retained), so a dashboard never shows objects of a stopped camera.
        The event writer finishes its queue by itself; stop joins it."""
        session.finish()
        self.outputs.nothing_tracked()

    def stop(self) -> None:
        """Stop the stream and join what it started: the producer (its end runs _stream_ended), the event writer,
        the engine timing."""
        self.stream.stop()
        self.events.stop()
        # Not the full wait of a reset: nothing replaces the files, and a timing's work folder left by an exit
        # during a quantize call is removed at the next start.
        if not self.timing.cancel(timeout=STOP_TIMING_WAIT_S):
            logger.info("the engine timing is still finishing a step; its work folder is removed at the next start")

    def trace(self, frames: int, onnx_profile: bool = False) -> dict:
        """Record the next frames' stage spans as a Chrome trace; raise Busy when not streaming."""
        return self.stream.trace(frames, onnx_profile)

    def viewer_frames(self) -> Iterator[bytes]:
        """Return a multipart generator for one viewer; raise Busy when not streaming or full."""
        return self.stream.viewer_frames()


def described(stored) -> dict | None:
    """Return a stored upload's JSON description, or None when there is none or its file just vanished (reset)."""
    if stored is None:
        return None
    try:
        return stored.as_dict()
    except OSError:
        return None
