"""The detection service: what the routes talk to, orchestrating the uploads, the model, the source and the stream."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Iterator

from server.demo import is_demo
from server.config import Config
from server.events.recorder import EventRecorder, chained
from server.outputs.adapter import CountsTap
from server.jobs import JobBoard
from server.models.acceptance import AcceptedModel, accept_model
from server.models.choice import reference_key
from server.models.int8.builds import Int8Models, auto_engines
from server.vision.engines import AUTO, ONNXRUNTIME
from server.vision.pipeline import STAGES, FramePipeline
from server.vision.sources import DEFAULT_FPS, LiveChoice
from server.vision.settings import Settings
from server.vision.tracker import Tracker
from server.web.current_model import CurrentModel
from server.web.exports import ExportRunning, Exports
from server.web.selection import SourceSelection
from server.web.streaming import Busy, StreamControl, TooManyViewers
from server.web.uploads import UploadStore

logger = logging.getLogger(__name__)

STOP_TUNING_WAIT_S = 10.0  # at shutdown

__all__ = ["Busy", "DetectionService", "TooManyViewers", "described"]

PENDING = {"video": "a video upload", "model": "a model upload", "reset": "a reset", "source": "a source change"}


class DetectionService:
    """What the routes talk to; every public method is safe to call from any request thread.

    Its collaborators, all made here: the store of uploads, the current model and settings, the source
    selection, the stream and the int8 builds. The lock guards swapping them and is only held to check and
    swap: probing a video or a source, checking and converting a model, stopping a stream and joining int8
    tuning all run outside it. While an upload, a source change or a reset is under way its kind is in
    _pending, and whatever would conflict with it (start, another of them) is refused with Busy instead of waiting.
    """

    def __init__(self, config: Config, store: UploadStore, jobs: JobBoard | None = None,
                 events: EventRecorder | None = None):
        self.config = config
        self.store = store
        self.jobs = jobs or JobBoard()
        self.int8 = Int8Models(self.jobs, [r for r in config.int8_recipes.split(",") if r], space=store.space)
        self.exports = Exports(store.root / "export", self.jobs, store.space)
        self.model = CurrentModel(store, self.int8, config.engine)
        self.sources = SourceSelection(config, self._calibration_ready)
        self.stream = StreamControl(config)
        self.events = events  # None: no events are recorded (a service built without them, as some tests do)
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
        video, model, settings = self.store.video, self.store.model, self.model.settings
        return {
            "streaming": self.streaming,
            "video": described(video),
            "model": self.model.described(described(model)),
            "settings": settings.as_dict(),
            "options": self.model.options(),
            "stats": self.stream.stats(),
            "stages": list(STAGES),  # the stages of stats.latency_ms, in the order a frame passes them
            "job": self.jobs.current(),
            "error": self.stream.last_error or self.int8.error,
            "precision": {**self.int8.status(model.onnx_path if model else None), **self.model.active()},
            "restored": self.store.restored,
            "source": self.sources.status(),
            "storage": self.store.space.status(),
            "demo": is_demo(video, model),
            "events": self.events.status() if self.events else None,
            "outputs": self.events.outputs.status() if self.events and self.events.outputs else None,
        }

    # -- uploads -----------------------------------------------------------------------------
    def add_video(self, upload: Path, filename: str) -> dict:
        """Probe and keep a video (outside the lock); a running int8 tuning is cancelled first."""
        self._begin("video", "replace the video")
        try:
            self._cancel_int8("a new video was uploaded")
            video = self.store.add_video(upload, filename).as_dict()
            with self._lock:
                self.sources.live = None  # an uploaded video replaces the live source
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
            self._cancel_int8("a new model was uploaded")
            model, ncnn = self.store.add_model(upload, filename, self._accept)
            with self._lock:
                self.int8.forget()
                self.model.adopt(model, ncnn)
            return self.model.described(model.as_dict())
        finally:
            self.jobs.end("convert")
            self._end("model")

    def _accept(self, upload: Path, suffix: str) -> AcceptedModel:
        """Check, convert and trial-run weights and write their NCNN copy, showing progress as the convert job."""
        return accept_model(upload, suffix, self.store.cache_folder(), self.store.trial, self.store.space,
                            self.config.convert_timeout,
                            lambda stage, progress, message: self.jobs.update("convert", stage, progress, message))

    def reset(self) -> list[str]:
        """Cancel and join int8 tuning and an export, then delete every upload, derived file and export."""
        if not self.exports.cancel():
            raise Busy("the export is still stopping; try again in a moment")
        self._begin("reset", "reset")
        try:
            self._cancel_int8("reset")
            with self._lock:
                self.model.forget()
                self.stream.forget()  # a finished stream's numbers go with its files
                self.int8.forget()
                self.sources.live = None
                if self.events:
                    self.events.clear()
                return self.store.reset() + self.exports.delete()
        finally:
            self._end("reset")

    # -- settings and int8 -------------------------------------------------------------------
    def update_settings(self, changes: dict) -> dict:
        """Validate and apply a settings change; the producer picks it up on its next frame.

        A new min_agreement re-judges the int8 recipes already measured (no retuning).
        """
        with self._lock:
            old = self.model.update(changes)
            settings, model = self.model.settings, self.store.model
            if model is not None and settings.min_agreement != old.min_agreement:
                self.int8.rejudge(model.onnx_path, settings.min_agreement)
            if wants_tuning(settings):
                self._build_int8()
            return settings.as_dict()

    def _build_int8(self) -> None:
        """Time the engines and tune int8 on frames from the source Start reads, once it has them (a live one
        after sampling a while): one job, whose verdict engine auto runs and whose int8 model precision int8 runs."""
        model, source = self.store.model, self.sources.for_stream(self.store.video)
        runtime = self.model.runtime
        if model is None or source is None or runtime is None or not source.calibration_ready or self._pending:
            return
        settings, cores = self.model.settings, os.cpu_count() or 1
        threads = reference_key(settings.threads, cores).threads
        self.int8.build(model.onnx_path, source.calibration_frames, settings.imgsz, settings.min_agreement,
                        threads, auto_engines(runtime, threads, cores))

    def _calibration_ready(self) -> None:
        """A live stream sampled enough frames: tune int8 now if it was asked for before they came.

        Called on the live reader's thread, which a stopping stream waits for: so no service lock here; the
        build itself runs on Int8Models' own thread, which stop, reset and uploads cancel and join.
        """
        if wants_tuning(self.model.settings) and self.streaming:
            self._build_int8()

    def _cancel_int8(self, why: str) -> None:
        """Cancel int8 tuning and wait for it: it reads the files about to change."""
        if self.int8.building():
            logger.info("cancelling int8 tuning: %s", why)
        if not self.int8.cancel():
            raise Busy("int8 tuning is still stopping; try again in a moment")

    def start_export(self) -> dict:
        """Start exporting the uploaded video with the current settings (a job); raise Busy when it cannot run now."""
        with self._lock:
            self.refuse_while_busy("export")
            video, model = self.store.video, self.store.model
            if video is None or model is None:
                missing = " and ".join(n for n, v in (("a video", video), ("a model", model)) if v is None)
                raise Busy(f"upload {missing} before exporting (a live source cannot be exported)")
            pipeline = FramePipeline(self.model.runtime.detector_for, model.info.classes, tracker_factory=Tracker)
            try:
                return self.exports.start(video.path, video.info, pipeline, self.model.settings, video.path.stem)
            except ExportRunning as exc:
                raise Busy(str(exc)) from None

    # -- source and stream -------------------------------------------------------------------
    def select_source(self, url: str) -> dict:
        """Check and probe a live source, then make it the one Start reads (replacing an uploaded video)."""
        self._begin("source", "change the source")  # before probing: a webcam in use cannot be opened twice
        try:
            choice = self.sources.probe(url)  # outside the lock: probing takes up to source_timeout
            self._cancel_int8("a live source replaces the video")
            with self._lock:
                self.store.drop_video()
                self.sources.live = choice
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
            if wants_tuning(self.model.settings):
                self._build_int8()
            pipeline = FramePipeline(self.model.runtime.detector_for, model.info.classes, tracker_factory=Tracker)
            live = isinstance(choice, LiveChoice)
            fps = (choice.info.fps if choice.info else DEFAULT_FPS) if live else self.store.video.info.fps
            session = self.events.begin(choice.label, model.info.classes, fps, live) if self.events else None
            self.stream.start(choice, pipeline, self.model.current,
                              on_publish=chained(session and session.tap, self._counts_tap(model.info.classes)),
                              on_end=session and session.finish)
            logger.info("stream started: %s with %s", choice.label, model.path.name)

    def _counts_tap(self, class_names: list[str]) -> CountsTap | None:
        """The tap that sends per-class counts of tracked objects to MQTT (None when no output is configured)."""
        outputs = self.events.outputs if self.events else None
        if outputs is None or not outputs.outputs:
            return None
        outputs.classes(class_names)
        return CountsTap(outputs.counts, class_names)

    def stop(self) -> None:
        """Stop the stream (the producer is joined with a timeout) and cancel int8 tuning."""
        self.stream.stop()
        if self.events:
            self.events.stop()
        # Not the full wait of a reset: nothing replaces the files, and a tuning's work folder left by an exit
        # during a quantize call is removed at the next start.
        if not self.int8.cancel(timeout=STOP_TUNING_WAIT_S):
            logger.info("int8 tuning is still finishing a step; its work folder is removed at the next start")

    def trace(self, frames: int, onnx_profile: bool = False) -> dict:
        """Record the next frames' stage spans as a Chrome trace; raise Busy when not streaming."""
        return self.stream.trace(frames, onnx_profile)

    def viewer_frames(self) -> Iterator[bytes]:
        """Return a multipart generator for one viewer; raise Busy when not streaming or full."""
        return self.stream.viewer_frames()


def wants_tuning(settings: Settings) -> bool:
    """Whether the settings need the on-device timing: engine auto, or ONNX Runtime int8 (its recipes)."""
    return settings.engine == AUTO or (settings.engine == ONNXRUNTIME and settings.precision == "int8")


def described(stored) -> dict | None:
    """Return a stored upload's JSON description, or None when there is none or its file just vanished (reset)."""
    if stored is None:
        return None
    try:
        return stored.as_dict()
    except OSError:
        return None
