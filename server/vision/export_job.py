"""The export job: one export of the uploaded video at a time, on a thread that cancel (and reset) stops and joins.

It owns uploads/export/: the annotated video, the detections file and a small summary (so a restart still offers
the last export's files for download). The frame loop itself is server.vision.export.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

from server.jobs import JobBoard, Worker, eta_seconds
from server.storage import DiskSpace, InsufficientStorage
from server.vision.export import (
    CODEC,
    PARTIAL_PREFIX,
    VIDEO_SUFFIX,
    ExportCancelled,
    ExportFailed,
    ExportResult,
    estimated_bytes,
    export_settings,
    export_video,
)
from server.vision.pipeline import FramePipeline
from server.vision.settings import Settings
from server.vision.sources import VideoInfo

logger = logging.getLogger(__name__)

VIDEO_NAME = "annotated" + VIDEO_SUFFIX
DETECTIONS_NAME = "detections.csv"
SUMMARY_NAME = "export.json"
JOB = "export"
CANCEL_JOIN_S = 30.0  # one frame's detection at most, plus closing the writer


class ExportRunning(RuntimeError):
    """An export is already running (HTTP 409)."""


class Exports:
    """Start, watch, cancel and delete the export; every public method is safe from any request thread."""

    def __init__(self, folder: Path, jobs: JobBoard, space: DiskSpace):
        self.folder, self.jobs, self.space = Path(folder), jobs, space
        self.video_path, self.detections_path = self.folder / VIDEO_NAME, self.folder / DETECTIONS_NAME
        self._lock = threading.Lock()
        self._worker = Worker("export", "the export")
        self._pipeline: FramePipeline | None = None  # the running (or last) export's: what ran, frame by frame
        self._state = idle()

    def readopt(self) -> None:
        """At start-up: remove what an interrupted export left; keep a finished one's files and summary."""
        if self.folder.is_dir():
            for leftover in self.folder.glob(PARTIAL_PREFIX + "*"):
                leftover.unlink(missing_ok=True)
        try:
            summary = json.loads((self.folder / SUMMARY_NAME).read_text())
        except (OSError, ValueError):
            summary = None
        if isinstance(summary, dict) and self.video_path.is_file() and self.detections_path.is_file():
            self._state = {**summary, "state": "done"}
            logger.info("the last export (%s) is still offered for download", summary.get("stem") or "export")
        else:
            self.delete()

    def running(self) -> bool:
        return self._worker.running()

    def start(self, video: Path, info: VideoInfo, pipeline: FramePipeline, settings: Settings, stem: str,
              runs: dict | None = None) -> dict:
        """Start exporting video in the background; raise ExportRunning or InsufficientStorage (nothing started).

        runs: what the settings run on now (an int8 not yet tuned runs fp32), shown until `ran` says what did."""
        with self._lock:
            if self.running():
                raise ExportRunning("an export is already running: wait for it or cancel it")
            self.delete()  # a new export replaces the last one; its room is counted without them
            self.space.require(estimated_bytes(info))  # a 507 now rather than a failed job in a moment
            if not self.jobs.begin(JOB, "exporting the video"):
                raise ExportRunning("an export is already running: wait for it or cancel it")
            self.folder.mkdir(parents=True, exist_ok=True)
            self._pipeline = pipeline
            self._state = {**idle(), "state": "running", "frames": info.frames, "stem": stem,
                           "settings": export_settings(settings).as_dict(), "runs": runs,
                           "started_at": time.time()}
            self._worker.start(self._export, video, info, pipeline, settings)
            return self.status()

    def _export(self, video: Path, info: VideoInfo, pipeline: FramePipeline, settings: Settings,
                cancel: threading.Event) -> None:
        try:
            result = export_video(video, info, pipeline, settings, self.video_path, self.detections_path,
                                  self.space, cancel, self._progress)
            try:
                self._finish(result)
            except BaseException:
                self.delete()  # files without their summary are not a finished export
                raise
        except ExportCancelled:
            self._set(state="cancelled")
            logger.info("export cancelled")
        except (InsufficientStorage, ExportFailed) as exc:
            self._set(state="failed", error=f"export failed: {exc}")
            logger.warning("export failed: %s", exc)
        except Exception as exc:  # shown in the export's status; the server goes on
            logger.exception("export failed")
            self._set(state="failed", error=f"export failed: {type(exc).__name__}: {exc}")
        finally:
            self.jobs.end(JOB)

    def _progress(self, done: int, total: int, seconds: float) -> None:
        fps = done / seconds if seconds > 0 else 0.0
        self._set(frames_done=done, frames=total, fps=round(fps, 2))
        self.jobs.update(JOB, "exporting", done / total, f"frame {done}/{total} at {fps:.1f} fps")

    def _finish(self, result: ExportResult) -> None:
        with self._lock:
            state = {**self._state, "state": "done", "frames_done": result.frames, "frames": result.frames,
                     "rows": result.rows, "seconds": result.seconds, "fps": result.fps, "ran": self._pipeline.ran}
            summary = json.dumps({k: v for k, v in state.items() if k != "state"})
            with self.space.guard(len(summary)):
                (self.folder / SUMMARY_NAME).write_text(summary)
            self._state = state
        logger.info("exported %d frames at %.1f fps, %d detections", result.frames, result.fps, result.rows)

    def _set(self, **changes) -> None:
        with self._lock:
            self._state = {**self._state, **changes}

    def cancel(self, timeout: float = CANCEL_JOIN_S) -> bool:
        """Ask a running export to stop and wait for it (its partial files are removed); False if it did not stop."""
        return self._worker.stop(timeout)

    def status(self) -> dict:
        """The export's state, progress, fps and its files (size and download name) once done."""
        state = dict(self._state)
        done, running = state["state"] == "done", state["state"] == "running"
        if "ran" not in state:  # while running (or once cancelled or failed): what ran so far
            state["ran"] = self._pipeline.ran if self._pipeline is not None else []
        progress = 1.0 if done else min(1.0, state["frames_done"] / state["frames"]) if state["frames"] else 0.0
        elapsed = time.time() - state.get("started_at", time.time())
        state["progress"] = round(progress, 4)
        state["eta_s"] = eta_seconds(elapsed, progress) if running else None
        state["codec"] = CODEC
        state["video"] = self._file("video", self.video_path, VIDEO_SUFFIX) if done else None
        state["detections"] = self._file("detections", self.detections_path, ".csv") if done else None
        return state

    def _file(self, kind: str, path: Path, suffix: str) -> dict | None:
        try:
            size = path.stat().st_size
        except OSError:
            return None
        return {"bytes": size, "name": self.download_name(kind, suffix)}

    def download_name(self, kind: str, suffix: str) -> str:
        label = "annotated" if kind == "video" else "detections"
        return f"{self._state.get('stem') or 'export'}-{label}{suffix}"

    def file_for(self, kind: str) -> tuple[Path, str] | None:
        """The finished export's file of this kind ("video" or "detections") and its download name, or None."""
        if self._state["state"] != "done":
            return None
        path, suffix = (self.video_path, VIDEO_SUFFIX) if kind == "video" else (self.detections_path, ".csv")
        return (path, self.download_name(kind, suffix)) if path.is_file() else None

    def delete(self) -> list[str]:
        """Delete the export's files (cancel a running export first); return what was deleted, relative to uploads/."""
        if not self.folder.is_dir():
            return []
        deleted = sorted(f"{self.folder.name}/{p.name}" for p in self.folder.iterdir()
                         if p.is_file() and not p.name.startswith("."))
        shutil.rmtree(self.folder, ignore_errors=True)
        if not self.running():
            self._state = idle()
        return deleted


def idle() -> dict:
    return {"state": "idle", "frames_done": 0, "frames": 0, "fps": None, "error": None}
