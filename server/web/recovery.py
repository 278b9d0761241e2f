"""Start-up after a crash: clean temporary leftovers, then re-adopt the stored video and model or remove them.

The server keeps nothing about its uploads but the files (server.layout names them). Files are put in place only
once valid, so after a crash (SIGKILL, power loss) a stored file is complete or absent, and whatever was in flight
sits under one of layout.TEMPORARY_PATTERNS: clean_leftovers deletes those (the first start step,
server.web.lifecycle). A stored file is then checked as an upload would be (UploadStore.readopt, a later step); it
is re-adopted when it passes and removed when it does not, so the state the server shows is never "none" while
files sit on disk.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from server.models.acceptance import recheck
from server.models.identify import MODEL_EXTENSIONS
from server.models.info import ModelRejected
from server.layout import TEMPORARY_PATTERNS
from server.vision.sources.file import VIDEO_EXTENSIONS, VideoUnreadable, probe_video

logger = logging.getLogger(__name__)


def clean_leftovers(folders: Iterable[Path]) -> list[str]:
    """Delete temporary files and folders left in these folders by a process that died; return their names."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for pattern in TEMPORARY_PATTERNS:
            for leftover in folder.glob(pattern):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                removed.append(leftover.name)
    if removed:
        logger.warning("removed %d leftover(s) of an interrupted run: %s", len(removed), ", ".join(sorted(removed)))
    return removed


def stored_files(folder: Path) -> list[Path]:
    """Return the visible files of a folder (none when it does not exist)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []


def readopt_video(folder: Path):
    """Return (path, VideoInfo) of the one stored video if it still probes, else None."""
    files = stored_files(folder)
    if len(files) != 1 or files[0].suffix.lower() not in VIDEO_EXTENSIONS:
        return None
    try:
        return files[0], probe_video(files[0])
    except VideoUnreadable:
        return None


def readopt_model(folder: Path, cache: Path, trial):
    """Return (path, onnx path, ModelInfo) of the stored model if it still passes the upload checks, else None.

    The folder holds the weights only; the ONNX the engines run and everything derived from it are in the cache
    (a .pt whose conversion is not there, cut off by the crash, is not re-adopted).
    """
    weights = [p for p in stored_files(folder) if p.suffix.lower() in MODEL_EXTENSIONS and ".int8." not in p.name]
    if len(weights) != 1:
        return None
    try:
        return weights[0], *recheck(weights[0], cache, trial)
    except ModelRejected as exc:
        logger.warning("stored model %s no longer passes its checks: %s", weights[0].name, exc)
        return None


def remove(folder: Path) -> list[str]:
    """Delete a folder; return the files it held, relative to its parent."""
    if not folder.is_dir():
        return []
    files = sorted(p.relative_to(folder.parent).as_posix() for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder, ignore_errors=True)
    return files
