"""The uploads folder: one video and one model at a time, written under a temporary name and kept only when valid."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import threading
import unicodedata
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from werkzeug.utils import secure_filename

from server.files import HashingWriter
from server.models.acceptance import AcceptedModel
from server.models.identify import MODEL_EXTENSIONS
from server.models.info import ModelInfo, ModelRejected
from server.models.ncnn import NcnnBuild
from server.models.trial_run import DEFAULT_BUDGET, TrialBudget
from server.layout import INCOMING_PREFIX, StorageLayout
from server.storage import DiskSpace
from server.vision.sources.file import (
    VIDEO_EXTENSIONS,
    VideoInfo,
    VideoUnreadable,
    probe_video,
)
from server.web import recovery

logger = logging.getLogger(__name__)

STORED_STEM_CHARS = 64  # file names stay far below the 255-byte limit of every filesystem
SHOWN_NAME_CHARS = 100


class UploadRejected(ValueError):
    """An upload that is not kept; its message is shown to the user."""


@dataclass(frozen=True)
class StoredVideo:
    path: Path
    info: VideoInfo
    name: str = ""  # the uploader's file name, as display text only

    def as_dict(self) -> dict:
        return {
            "name": self.name or self.path.name,
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
    name: str = ""  # the uploader's file name, as display text only

    def as_dict(self) -> dict:
        return {"name": self.name or self.path.name, **self.info.as_dict()}


def upload_suffix(filename: str | None) -> str:
    """The extension of an uploaded file name, lower-cased ('' when there is none)."""
    return Path((filename or "").replace("\0", "")).suffix.lower()


def safe_name(filename: str, allowed: tuple[str, ...], kind: str) -> str:
    """Return the name to store an upload under, made by the server, or raise UploadRejected.

    Only ASCII letters, digits, `._-` from the original stem and at most STORED_STEM_CHARS of them: any
    name a client sends (300 characters, scripts, `../`, right-to-left marks) becomes a short plain one.
    """
    suffix = upload_suffix(filename)
    if suffix not in allowed:
        shown = suffix[:12] or "no extension"
        raise UploadRejected(f"{kind} must be one of {', '.join(allowed)} (got {shown})")
    stem = secure_filename(Path(filename).stem)[:STORED_STEM_CHARS].strip("._") or kind.split()[0]
    return stem + suffix


def display_name(filename: str, fallback: str) -> str:
    """The uploader's name as text to show: no control or direction characters, truncated."""
    kept = (" " if unicodedata.category(c)[0] == "Z" else c for c in filename if unicodedata.category(c)[0] != "C")
    text = " ".join("".join(kept).split())
    if len(text) > SHOWN_NAME_CHARS:
        text = text[: SHOWN_NAME_CHARS - 1] + "\u2026"
    return text or fallback


class UploadStore:
    """Own the uploads: the layout's video/, model/ and cache/ (derived models), each made when first needed.

    Built empty: readopt (a start-up step, server.web.lifecycle) takes back what a previous run stored.
    """

    def __init__(self, layout: StorageLayout, trial: TrialBudget = DEFAULT_BUDGET, reserve_bytes: int = 0):
        self.layout = layout
        self.root = layout.root
        self.trial = trial  # what an uploaded (or converted) ONNX's trial run may take
        self.root.mkdir(parents=True, exist_ok=True)  # the free-space check reads the folder's file system
        self.space = DiskSpace(self.root, reserve_bytes)  # every write into root checks it first
        self._lock = threading.Lock()
        self._incoming: weakref.WeakValueDictionary[str, HashingWriter] = weakref.WeakValueDictionary()
        self.video: StoredVideo | None = None
        self.model: StoredModel | None = None
        self.restored: dict | None = None  # what a previous run left, shown in /api/status

    def readopt(self) -> StoredModel | None:
        """Re-adopt the video and model a previous run stored, each checked as an upload is (the model's trial run
        takes up to trial.timeout_s), or remove them; return the model. Run after the leftovers are cleaned."""
        layout = self.layout
        video, model = recovery.readopt_video(layout.video), recovery.readopt_model(layout.model, layout.cache,
                                                                                   self.trial)
        removed = [] if video else recovery.remove(layout.video)
        if not model:
            removed += recovery.remove(layout.model) + recovery.remove(layout.cache)
        self.video = StoredVideo(*video) if video else None
        self.model = StoredModel(*model) if model else None
        if video or model or removed:
            self.restored = {"video": video[0].name if video else None, "model": model[0].name if model else None,
                             "removed": removed}
            logger.warning("re-adopted from the previous run: video %s, model %s; removed %s",
                           self.restored["video"], self.restored["model"], removed or "nothing")
        return self.model

    def incoming_file(self, suffix: str) -> IO[bytes]:
        """Open a hidden temporary file for an upload in flight (weights hashed as they are written: the cache's
        key); it vanishes when closed unless kept."""
        # The suffix lets the readers recognise the format; anything else a client sends stays out of paths.
        known = suffix if suffix in VIDEO_EXTENSIONS + MODEL_EXTENSIONS else ""
        file = tempfile.NamedTemporaryFile("wb+", dir=self.root, prefix=INCOMING_PREFIX, suffix=known)
        if known not in MODEL_EXTENSIONS:
            return file
        incoming = HashingWriter(file)
        self._incoming[incoming.name] = incoming  # forgotten with the file object, at the request's end
        return incoming

    def _sha256_of_incoming(self, upload: Path) -> str | None:
        """The SHA-256 an upload in flight was hashed to as it arrived (None: a file this store did not open)."""
        incoming = self._incoming.get(str(upload))
        return incoming.sha256() if incoming is not None else None

    def cache_folder(self) -> Path:
        """Return the folder for derived models, creating it."""
        self.layout.cache.mkdir(exist_ok=True)
        return self.layout.cache

    def add_video(self, upload: Path, filename: str) -> StoredVideo:
        """Validate an uploaded video and make it the current one, deleting the previous."""
        name = safe_name(filename, VIDEO_EXTENSIONS, "video")
        shown = display_name(filename, name)
        try:
            info = probe_video(upload)
        except VideoUnreadable as exc:
            raise UploadRejected(f"{shown}: {exc}") from None
        with self._lock:
            path = self._keep(upload, self.layout.video, name)
            self.video = StoredVideo(path, info, shown)
        logger.info("video %s: %dx%d %.2f fps %d frames", name, info.width, info.height, info.fps, info.frames)
        return self.video

    def add_model(self, upload: Path, filename: str,
                  accept: Callable[[Path, str, str | None], AcceptedModel]) -> tuple[StoredModel, NcnnBuild]:
        """Check uploaded weights with accept(path, extension, sha256 or None) and make them the current model;
        return it and its NCNN build."""
        name = safe_name(filename, MODEL_EXTENSIONS, "weights file")
        try:
            accepted = accept(upload, Path(name).suffix, self._sha256_of_incoming(upload))
        except ModelRejected as exc:
            raise UploadRejected(str(exc)) from None
        with self._lock:
            path = self._keep(upload, self.layout.model, name)
            self.model = StoredModel(path, accepted.onnx_path, accepted.info, display_name(filename, name))
        info = accepted.info
        logger.info("model %s: %s %s, %d classes", name, info.family, info.task, len(info.classes))
        return self.model, accepted.ncnn

    def _keep(self, upload: Path, folder: Path, name: str) -> Path:
        """Make the (validated) upload folder's only file, under name.

        The new file is in place before the previous one goes: if anything fails on the way (disk
        full), the current video or model is still whole.
        """
        folder.mkdir(exist_ok=True)
        staged = folder / f"{INCOMING_PREFIX}{secrets.token_hex(8)}{Path(name).suffix}"
        os.link(upload, staged)  # a hard link: the temporary name goes away when the request ends
        final = folder / name
        os.replace(staged, final)
        for other in folder.iterdir():
            if other != final:
                shutil.rmtree(other) if other.is_dir() else other.unlink(missing_ok=True)
        return final

    def drop_video(self) -> None:
        """Forget and delete the current video (a live source replaces it)."""
        with self._lock:
            shutil.rmtree(self.layout.video, ignore_errors=True)
            self.video = None

    def reset(self) -> list[str]:
        """Delete every upload and derived model; return what was deleted, relative to the root."""
        with self._lock:
            folders = self.layout.uploads()
            deleted = sorted(p.relative_to(self.root).as_posix() for d in folders for p in d.rglob("*") if p.is_file())
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            self.video = self.model = None
            self.restored = None
        logger.info("reset deleted %d file(s)", len(deleted))
        return deleted
