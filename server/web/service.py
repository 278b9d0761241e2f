"""The detection service: current uploads, settings, model sessions and the running stream, behind one lock."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator

from server.config import Config
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
    """What the routes talk to; every public method is safe to call from any request thread."""

    def __init__(self, config: Config, store: UploadStore, jobs: JobBoard | None = None):
        self.config = config
        self.store = store
        self.jobs = jobs or JobBoard()
        self.settings = Settings()
        self.demo = False
        self.lan_urls: list[str] = []
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._runner: StreamRunner | None = None
        self._runtime: ModelRuntime | None = None
        self._live: LiveChoice | None = LiveChoice.camera(config) if config.camera else None
        self.int8 = Int8Models(self.jobs, [r for r in config.int8_recipes.split(",") if r])

    # -- state -------------------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        return self._runner is not None and self._runner.running

    def refuse_while_busy(self, action: str) -> None:
        """Raise Busy while a stream runs or int8 tuning reads the current files."""
        if self.streaming:
            raise Busy(f"cannot {action} while streaming: stop the stream first")
        if self.int8.building():
            raise Busy(f"cannot {action} while int8 tuning runs; wait for it to finish")

    def imgsz_choices(self) -> tuple[int, ...]:
        model = self.store.model
        if model is not None and model.info.input_hw is not None:
            return (model.info.imgsz,)
        return IMGSZ_CHOICES

    def status(self) -> dict:
        """Everything the page shows, as JSON-ready data."""
        runner = self._runner
        stats = runner.stats.snapshot(runner.hub.viewers) if runner else StreamStats().snapshot(0)
        return {
            "streaming": self.streaming,
            "video": self.store.video.as_dict() if self.store.video else None,
            "model": self.store.model.as_dict() if self.store.model else None,
            "settings": self.settings.as_dict(),
            "options": options_for(self.imgsz_choices()),
            "stats": stats,
            "job": self.jobs.current(),
            "error": self.last_error or self.int8.error,
            "precision": self._precision_status(),
            "source": self._live.status() if self._live else None,
            "lan_urls": self.lan_urls,
            "demo": self.demo,
        }

    def _precision_status(self) -> dict:
        """What runs now, and the int8 tuning table when there is one."""
        model = self.store.model
        int8_path = self.int8.ready(model.onnx_path) if model else None
        active = "int8" if self.settings.precision == "int8" and int8_path else "fp32"
        report = self.int8.report(model.onnx_path) if int8_path else None
        return {"active": active, "building": self.int8.building(), "int8": report}

    # -- uploads -----------------------------------------------------------------------------
    def add_video(self, upload: Path, filename: str) -> dict:
        with self._lock:
            self.refuse_while_busy("replace the video")
            video = self.store.add_video(upload, filename).as_dict()
            self._live = None  # an uploaded video replaces the live source
            return video

    def add_model(self, upload: Path, filename: str) -> dict:
        if not self.jobs.begin("convert", "checking the weights"):
            raise Busy("another model is being converted; wait for it to finish")
        try:
            with self._lock:
                self.refuse_while_busy("replace the model")
                model = self.store.add_model(upload, filename, self._to_onnx)
                self.int8.forget()
                self._runtime = ModelRuntime(model.onnx_path, lambda: self.int8.ready(model.onnx_path))
                self.settings = self._settings_for_model(model)
                return model.as_dict()
        finally:
            self.jobs.end("convert")

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
        with self._lock:
            self.refuse_while_busy("reset")
            self._runtime = None
            self.last_error = None
            self.demo = False
            self.settings = apply_changes(self.settings, {"precision": Settings.precision})
            self._runner = None  # a finished stream's numbers go with its files
            self.int8.forget()
            self._live = None
            return self.store.reset()

    # -- settings ----------------------------------------------------------------------------
    def update_settings(self, changes: dict) -> dict:
        """Validate and apply a settings change; the producer picks it up on its next frame."""
        with self._lock:
            class_count = len(self.store.model.info.classes) if self.store.model else 0
            self.settings = apply_changes(self.settings, changes, self.imgsz_choices(), class_count)
            if self.settings.precision == "int8":
                self._build_int8()
            return self.settings.as_dict()

    def _build_int8(self) -> None:
        video, model = self.store.video, self.store.model
        frames_from = video.path if video is not None else self._live_calibration_clip()
        if frames_from is not None and model is not None:
            settings = self.settings
            self.int8.build(model.onnx_path, frames_from, settings.imgsz, settings.min_agreement, settings.threads)

    def current_settings(self) -> Settings:
        return self.settings

    # -- stream ------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self.streaming:
                return
            video, model, live = self.store.video, self.store.model, self._live
            if (video is None and live is None) or model is None:
                needed = (("a video (or choose a live source)", video or live), ("a model", model))
                missing = " and ".join(n for n, v in needed if v is None)
                raise Busy(f"upload {missing} before starting the stream")
            if self.settings.precision == "int8":
                self._build_int8()
            pipeline = FramePipeline(self._runtime.detector_for, model.info.classes, tracker_factory=Tracker)
            self.last_error = None
            if live is not None:
                self._runner = self._live_runner(live, pipeline)
            else:
                self._runner = StreamRunner(str(video.path), video.info, pipeline, self.current_settings, self._on_end,
                                            max_viewer_fps=self.config.viewer_max_fps)
            self._runner.start()
            logger.info("stream started: %s with %s", live.spec.label if live else video.path.name, model.path.name)

    # -- live sources ------------------------------------------------------------------------
    def select_source(self, url: str) -> dict:
        """Check and probe a live source, then make it the one Start reads (replacing an uploaded video)."""
        self.refuse_while_busy("change the source")  # before probing: a webcam in use cannot be opened twice
        choice = LiveChoice.check(url, self.config)  # outside the lock: probing takes up to source_timeout
        with self._lock:
            self.refuse_while_busy("change the source")
            self.store.drop_video()
            self._live = choice
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

    def _live_runner(self, live: LiveChoice, pipeline: FramePipeline) -> StreamRunner:
        live.on_samples = self._live_samples_ready
        settings = LiveChoice.settings_for(self.current_settings)
        return StreamRunner(
            live.spec.label, live.video_info(), pipeline, settings, self._on_end,
            open_source=live.open, on_publish=live.published, max_viewer_fps=self.config.viewer_max_fps,
        )

    def _on_end(self, error: str | None) -> None:
        if error:
            self.last_error = error

    def stop(self) -> None:
        runner = self._runner
        if runner is not None and runner.running:
            runner.stop()
            logger.info("stream stopped after %d frames", runner.hub.published)  # stop cleared the stats

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
        if runner is None or not self.streaming:
            raise Busy("the stream is not running: POST /stream/start first")
        if runner.hub.viewers >= self.max_viewers:
            raise TooManyViewers(f"too many viewers ({runner.hub.viewers}); close a tab or raise --threads")
        return runner.hub.frames()

    @property
    def max_viewers(self) -> int:
        # Each viewer holds an HTTP worker thread; keep some for the page's API calls.
        return max(1, self.config.threads - 4)
