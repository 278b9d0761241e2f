"""The uploads folder: one video and one model at a time, written under a temporary name and kept only when valid."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from werkzeug.utils import secure_filename

from server.models.identify import inspect_model
from server.models.info import ModelInfo, ModelRejected
from server.vision.video import (
    VIDEO_EXTENSIONS,
    VideoInfo,
    VideoUnreadable,
    probe_video,
)

logger = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".pt", ".onnx")
INCOMING_PREFIX = ".upload-"
KEEP = {".gitkeep"}


class UploadRejected(ValueError):
    """An upload that is not kept; its message is shown to the user."""


@dataclass(frozen=True)
class StoredVideo:
    path: Path
    info: VideoInfo

    def as_dict(self) -> dict:
        return {
            "name": self.path.name,
            "width": self.info.width,
            "height": self.info.height,
            "fps": self.info.fps,
            "frames": self.info.frames,
            "size": self.path.stat().st_size,
        }


@dataclass(frozen=True)
class StoredModel:
    path: Path
    onnx_path: Path
    info: ModelInfo

    def as_dict(self) -> dict:
        return {"name": self.path.name, **self.info.as_dict()}


def safe_name(filename: str, allowed: tuple[str, ...], kind: str) -> str:
    """Return a filesystem-safe name with an allowed extension, or raise UploadRejected."""
    suffix = Path(filename or "").suffix.lower()
    if suffix not in allowed:
        shown = suffix or "no extension"
        raise UploadRejected(f"{kind} must be one of {', '.join(allowed)} (got {shown})")
    stem = secure_filename(Path(filename).stem) or kind
    return stem + suffix


class UploadStore:
    """Own the uploads folder: video/, model/ and cache/ (derived models), each made when first needed."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.video_dir, self.model_dir, self.cache_dir = (self.root / n for n in ("video", "model", "cache"))
        for leftover in self.root.glob(INCOMING_PREFIX + "*"):  # uploads cut off by a crash
            leftover.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self.video: StoredVideo | None = None
        self.model: StoredModel | None = None

    def incoming_file(self, suffix: str) -> IO[bytes]:
        """Open a hidden temporary file for an upload in flight; it vanishes when closed unless kept."""
        return tempfile.NamedTemporaryFile(
            "wb+", dir=self.root, prefix=INCOMING_PREFIX, suffix=suffix.lower()[:10]
        )

    def cache_folder(self) -> Path:
        """Return the folder for derived models, creating it."""
        self.cache_dir.mkdir(exist_ok=True)
        return self.cache_dir

    def add_video(self, upload: Path, filename: str) -> StoredVideo:
        """Validate an uploaded video and make it the current one, deleting the previous."""
        name = safe_name(filename, VIDEO_EXTENSIONS, "video")
        try:
            info = probe_video(upload)
        except VideoUnreadable as exc:
            raise UploadRejected(f"{filename}: {exc}") from None
        with self._lock:
            path = self._keep(upload, self.video_dir, name)
            self.video = StoredVideo(path, info)
        logger.info("video %s: %dx%d %.2f fps %d frames", name, info.width, info.height, info.fps, info.frames)
        return self.video

    def add_model(self, upload: Path, filename: str, to_onnx: Callable[[Path, int], Path]) -> StoredModel:
        """Validate uploaded weights (converting a .pt with to_onnx(path, imgsz)) and make them the current model."""
        name = safe_name(filename, MODEL_EXTENSIONS, "weights file")
        try:
            checked = inspect_model(upload)
            onnx_path = to_onnx(upload, checked.imgsz) if name.endswith(".pt") else None
            info = inspect_model(onnx_path or upload)
        except ModelRejected as exc:
            raise UploadRejected(str(exc)) from None
        with self._lock:
            path = self._keep(upload, self.model_dir, name)
            self.model = StoredModel(path, onnx_path or path, info)
        logger.info("model %s: %s %s, %d classes", name, info.family, info.task, len(info.classes))
        return self.model

    def _keep(self, upload: Path, folder: Path, name: str) -> Path:
        """Replace folder's contents with the upload under name (a hard link: the temp name goes away)."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        final = folder / name
        os.link(upload, final)
        return final

    def drop_video(self) -> None:
        """Forget and delete the current video (a live source replaces it)."""
        with self._lock:
            shutil.rmtree(self.video_dir, ignore_errors=True)
            self.video = None

    def reset(self) -> list[str]:
        """Delete every upload and derived model; return what was deleted, relative to the root."""
        with self._lock:
            folders = (self.video_dir, self.model_dir, self.cache_dir)
            deleted = sorted(p.relative_to(self.root).as_posix() for d in folders for p in d.rglob("*") if p.is_file())
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            self.video = self.model = None
        logger.info("reset deleted %d file(s)", len(deleted))
        return deleted
