"""The detection service: current uploads, settings, model sessions and the running stream, behind one lock."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator

from server.config import Config
from server.events.recorder import EventRecorder, chained
from server.jobs import JobBoard
from server.models import convert
from server.models.int8.builds import Int8Models
from server.models.runtime import ModelRuntime
from server.vision.pipeline import FramePipeline
from server.vision.settings import IMGSZ_CHOICES, Settings, apply_changes, options_for
from server.vision.stats import StreamStats
from server.vision.stream import StreamRunner, TraceBusy
from server.vision.tracker import Tracker
from server.web.live import CALIBRATION_CLIP, LiveChoice
from server.web.uploads import StoredModel, UploadStore

logger = logging.getLogger(__name__)


class Busy(RuntimeError):
    """The request conflicts with what the server is doing (HTTP 409)."""


class TooManyViewers(RuntimeError):
    """Every viewer slot is taken (HTTP 503)."""


class DetectionService:
    """What the routes talk to; every public method is safe to call from any request thread.

    The lock guards the current state (uploads, settings, runtime, runner) and is only held to check and swap it:
    probing a video, checking and converting a model, stopping a stream and joining int8 tuning all run outside
    it. While an upload or a reset is under way its kind is in _pending, and whatever would conflict with it
    (start, another upload, reset) is refused with Busy instead of waiting.
    """

    def __init__(self, config: Config, store: UploadStore, jobs: JobBoard | None = None,
                 events: EventRecorder | None = None):
        self.config = config
        self.store = store
        self.jobs = jobs or JobBoard()
        self.events = events
        self.settings = Settings()
        self.demo = False
        self.lan_urls: list[str] = []
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._pending: set[str] = set()  # "video", "model" or "reset" while one is under way
        self._runner: StreamRunner | None = None
        self._runtime: ModelRuntime | None = None
        self._live: LiveChoice | None = LiveChoice.camera(config) if config.camera else None
        self.int8 = Int8Models(self.jobs, [r for r in config.int8_recipes.split(",") if r])
        if store.model is not None:  # re-adopted from a previous run (see UploadStore)
            self._runtime = self._runtime_for(store.model)
            self.settings = self._settings_for_model(store.model)

    # -- state -------------------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        """True while any of the producer's threads is alive, also while it is still stopping."""
        runner = self._runner
        return runner is not None and any(thread.is_alive() for thread in runner.threads())

    def refuse_while_busy(self, action: str) -> None:
        """Raise Busy while a stream runs or an upload or reset is under way."""
        if self.streaming:
            raise Busy(f"cannot {action} while streaming: stop the stream first")
        pending = sorted(self._pending)
        if pending:
            what = {"video": "a video upload", "model": "a model upload", "reset": "a reset",
                    "source": "a source change"}[pending[0]]
            raise Busy(f"cannot {action} while {what} is being processed; try again when it is done")

    def _begin(self, kind: str, action: str) -> None:
        """Check that nothing conflicts with this upload or reset and mark it under way (under the lock)."""
        with self._lock:
            self.refuse_while_busy(action)
            self._pending.add(kind)

    def _end(self, kind: str) -> None:
        with self._lock:
            self._pending.discard(kind)

    def _cancel_int8(self, why: str) -> None:
        """Cancel int8 tuning and wait for it: it reads the files about to change."""
        if self.int8.building():
            logger.info("cancelling int8 tuning: %s", why)
        if not self.int8.cancel():
            raise Busy("int8 tuning is still stopping; try again in a moment")

    def imgsz_choices(self) -> tuple[int, ...]:
        model = self.store.model
        if model is not None and model.info.input_hw is not None:
            return (model.info.imgsz,)
        return IMGSZ_CHOICES

    def status(self) -> dict:
        """Everything the page shows, as JSON-ready data; files vanishing meanwhile (a reset) are shown as gone."""
        runner, video, model = self._runner, self.store.video, self.store.model
        stats = runner.stats.snapshot(runner.hub.viewers) if runner else StreamStats().snapshot(0)
        return {
            "streaming": self.streaming,
            "video": described(video),
            "model": described(model),
            "settings": self.settings.as_dict(),
            "options": options_for(self.imgsz_choices()),
            "stats": stats,
            "job": self.jobs.current(),
            "error": self.last_error or self.int8.error,
            "precision": self._precision_status(model),
            "restored": self.store.restored,
            "source": self._live.status() if self._live else None,
            "lan_urls": self.lan_urls,
            "demo": self.demo,
            "events": self.events.status() if self.events else None,
        }

    def _precision_status(self, model: StoredModel | None) -> dict:
        """What runs now, and the int8 tuning table when there is one."""
        int8_path = self.int8.ready(model.onnx_path) if model else None
        active = "int8" if self.settings.precision == "int8" and int8_path else "fp32"
        report = self.int8.report(model.onnx_path) if int8_path else None
        return {"active": active, "building": self.int8.building(), "int8": report}

    # -- uploads -----------------------------------------------------------------------------
    def add_video(self, upload: Path, filename: str) -> dict:
        """Probe and keep a video (outside the lock); a running int8 tuning is cancelled first."""
        self._begin("video", "replace the video")
        try:
            self._cancel_int8("a new video was uploaded")
            video = self.store.add_video(upload, filename).as_dict()
            with self._lock:
                self._live = None  # an uploaded video replaces the live source
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
            model = self.store.add_model(upload, filename, self._to_onnx)
            with self._lock:
                self.int8.forget()
                self._runtime = self._runtime_for(model)
                self.settings = self._settings_for_model(model)
            return model.as_dict()
        finally:
            self.jobs.end("convert")
            self._end("model")

    def _runtime_for(self, model: StoredModel) -> ModelRuntime:
        return ModelRuntime(model.onnx_path, lambda: self.int8.ready(model.onnx_path))

    def _to_onnx(self, pt_path: Path, imgsz: int) -> Path:
        return convert.convert_cached(
            pt_path,
            self.store.cache_folder(),
            imgsz=imgsz,
            timeout=self.config.convert_timeout,
            on_progress=lambda stage, progress, message: self.jobs.update("convert", stage, progress, message),
        )

    def _settings_for_model(self, model: StoredModel) -> Settings:
        """Start a new model at the size it was trained or exported for, when that is offered."""
        choices = self.imgsz_choices()
        imgsz = model.info.imgsz if model.info.imgsz in choices else choices[-1]
        return apply_changes(self.settings, {"imgsz": imgsz, "classes": None}, choices, len(model.info.classes))

    def reset(self) -> list[str]:
        """Cancel and join int8 tuning, then delete every upload and derived file; precision goes back to fp32."""
        self._begin("reset", "reset")
        try:
            self._cancel_int8("reset")
            with self._lock:
                self._runtime = None
                self.last_error = None
                self.demo = False
                self.settings = apply_changes(self.settings, {"precision": Settings.precision})
                self._runner = None  # a finished stream's numbers go with its files
                self.int8.forget()
                self._live = None
                if self.events:
                    self.events.clear()
                return self.store.reset()
        finally:
            self._end("reset")

    # -- settings ----------------------------------------------------------------------------
    def update_settings(self, changes: dict) -> dict:
        """Validate and apply a settings change; the producer picks it up on its next frame.

        A new min_agreement re-judges the int8 recipes already measured (no retuning).
        """
        with self._lock:
            model = self.store.model
            class_count = len(model.info.classes) if model else 0
            old = self.settings
            self.settings = apply_changes(self.settings, changes, self.imgsz_choices(), class_count)
            if model is not None and self.settings.min_agreement != old.min_agreement:
                self.int8.rejudge(model.onnx_path, self.settings.min_agreement)
            if self.settings.precision == "int8":
                self._build_int8()
            return self.settings.as_dict()

    def _build_int8(self) -> None:
        video, model = self.store.video, self.store.model
        frames_from = video.path if video is not None else self._live_calibration_clip()
        if frames_from is not None and model is not None and not self._pending:
            settings = self.settings
            self.int8.build(model.onnx_path, frames_from, settings.imgsz, settings.min_agreement, settings.threads)

    def current_settings(self) -> Settings:
        return self.settings

    # -- stream ------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            runner = self._runner
            if self.streaming and runner.stop_event.is_set():
                raise Busy("the previous stream is still stopping; try again in a moment")
            if self.streaming:
                return
            self.refuse_while_busy("start the stream")
            video, model, live = self.store.video, self.store.model, self._live
            if (video is None and live is None) or model is None:
                needed = (("a video (or choose a live source)", video or live), ("a model", model))
                missing = " and ".join(n for n, v in needed if v is None)
                raise Busy(f"upload {missing} before starting the stream")
            if self.settings.precision == "int8":
                self._build_int8()
            pipeline = FramePipeline(self._runtime.detector_for, model.info.classes, tracker_factory=Tracker)
            self.last_error = None
            events = self.events and self.events.begin(live.spec.label if live else video.name, model.info.classes,
                                                       (live.video_info() if live else video.info).fps, bool(live))
            if live is not None:
                self._runner = self._live_runner(live, pipeline, events)
            else:
                self._runner = StreamRunner(str(video.path), video.info, pipeline, self.current_settings,
                                            self._ender(events), max_viewer_fps=self.config.viewer_max_fps,
                                            on_publish=events and events.tap)
            self._runner.start()
            logger.info("stream started: %s with %s", live.spec.label if live else video.path.name, model.path.name)

    # -- live sources ------------------------------------------------------------------------
    def select_source(self, url: str) -> dict:
        """Check and probe a live source, then make it the one Start reads (replacing an uploaded video)."""
        self._begin("source", "change the source")  # before probing: a webcam in use cannot be opened twice
        try:
            choice = LiveChoice.check(url, self.config)  # outside the lock: probing takes up to source_timeout
            self._cancel_int8("a live source replaces the video")
            with self._lock:
                self.store.drop_video()
                self._live = choice
        finally:
            self._end("source")
        logger.info("live source selected: %s", choice.spec.label)
        return choice.status()

    def _live_calibration_clip(self) -> Path | None:
        """Frames of the running live source for int8 tuning (None until it has streamed a few seconds)."""
        live = self._live
        return live.calibration_clip(self.store.cache_folder() / CALIBRATION_CLIP) if live else None

    def _live_samples_ready(self) -> None:
        """The live stream has sampled enough frames: tune int8 now if it was asked for before they came."""

        def build() -> None:
            with self._lock:
                if self.settings.precision == "int8" and self.streaming:
                    self._build_int8()

        # Not on the reader's thread: a stop holding the lock would wait for that thread to end.
        threading.Thread(target=build, name="live-int8", daemon=True).start()

    def _live_runner(self, live: LiveChoice, pipeline: FramePipeline, events) -> StreamRunner:
        live.on_samples = self._live_samples_ready
        settings = LiveChoice.settings_for(self.current_settings)
        return StreamRunner(
            live.spec.label, live.video_info(), pipeline, settings, self._ender(events), open_source=live.open,
            on_publish=chained(live.published, events and events.tap), max_viewer_fps=self.config.viewer_max_fps,
        )

    def _on_end(self, error: str | None) -> None:
        if error:
            self.last_error = error

    def _ender(self, events):
        """The stream's on_end: its events are closed and saved first."""

        def on_end(error: str | None) -> None:
            if events is not None:
                events.finish()
            self._on_end(error)

        return on_end

    def stop(self) -> None:
        """Stop the stream (the producer is joined with a timeout) and cancel int8 tuning."""
        runner = self._runner
        if runner is not None and self.streaming:
            runner.stop()
            logger.info("stream stopped after %d frames", runner.hub.published)  # stop cleared the stats
        if self.events:
            self.events.stop()
        self.int8.cancel()

    def trace(self, frames: int, onnx_profile: bool = False) -> dict:
        """Record the next frames' stage spans as a Chrome trace; raise Busy when not streaming."""
        runner = self._runner
        if runner is None or not self.streaming:
            raise Busy("the stream is not running: start it, then record a trace")
        try:
            return runner.record_trace(frames, onnx_profile)
        except TraceBusy as exc:
            raise Busy(str(exc)) from None

    def viewer_frames(self) -> Iterator[bytes]:
        """Return a multipart generator for one viewer; raise Busy when not streaming or full."""
        runner = self._runner
        if runner is None or not self.streaming or runner.stop_event.is_set():
            raise Busy("the stream is not running: POST /stream/start first")
        if runner.hub.viewers >= self.max_viewers:
            raise TooManyViewers(f"too many viewers ({runner.hub.viewers}); close a tab or raise --threads")
        return runner.hub.frames()

    @property
    def max_viewers(self) -> int:
        # Each viewer holds an HTTP worker thread; keep some for the page's API calls.
        return max(1, self.config.threads - 4)


def described(stored) -> dict | None:
    """Return a stored upload's JSON description, or None when there is none or its file just vanished (reset)."""
    if stored is None:
        return None
    try:
        return stored.as_dict()
    except OSError:
        return None
