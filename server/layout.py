"""Where the server keeps its files: every folder and temporary name under the uploads root, named once.

    uploads/
      video/<one file>          the uploaded video (server.web.uploads)
      model/<one file>          the uploaded weights, as sent (.pt or .onnx)
      cache/<sha256>.onnx       the ONNX the engines run (a .pt's conversion, or a hard link to an .onnx upload),
                                with everything derived from it beside it: the NCNN copy (.ncnn.*), int8 variants
                                (.int8.*) and the engine timing's report; cache/.engine-timing-* is a timing at work
      export/                   the last export: annotated video, detections CSV, summary (server.vision.export_job)
      events/                   events.sqlite3 and the events' pictures (server.events.store)
      .upload-*                 an upload in flight (a hidden temporary file, gone when the request ends)
      **/.*.partial             a file being written (server.files.atomic_write)

Files are put in place only once valid (a hard link or an atomic rename), so after a crash a stored file is
complete or absent and whatever was in flight sits under one of TEMPORARY_PATTERNS, which start-up deletes
(server.web.recovery). Nothing here creates a folder: each owner makes its own when it first writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.files import TEMPORARY_PATTERN

INCOMING_PREFIX = ".upload-"  # uploads in flight and being put in place
TIMING_WORK_PREFIX = ".engine-timing-"  # the engine timing's work folder (int8 candidates), inside cache/
# Names earlier versions used for the same leftovers: still cleaned at start-up after an upgrade.
FORMER_TEMPORARY_PATTERNS = (".int8-tune-*",)
TEMPORARY_PATTERNS = (f"{INCOMING_PREFIX}*", TEMPORARY_PATTERN, f"{TIMING_WORK_PREFIX}*", *FORMER_TEMPORARY_PATTERNS)


@dataclass(frozen=True)
class StorageLayout:
    """The uploads root and every folder the server keeps under it."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def video(self) -> Path:
        return self.root / "video"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def cache(self) -> Path:
        """Derived models: the ONNX the engines run, keyed by content, and what is built from it."""
        return self.root / "cache"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def events(self) -> Path:
        return self.root / "events"

    def cached_onnx(self, sha256: str) -> Path:
        """The ONNX the engines run for a model file whose content hashes to sha256."""
        return cached_onnx_in(self.cache, sha256)

    def uploads(self) -> tuple[Path, ...]:
        """The folders a reset empties along with the export and the events: the uploads and what derives from them."""
        return self.video, self.model, self.cache

    def folders(self) -> tuple[Path, ...]:
        """Every folder a crashed run may have left temporary files in (the root first)."""
        return self.root, *self.uploads(), self.export, self.events


# The files derived from the engines' ONNX live beside it (in cache/), named after its stem, so a reset or a new
# model removes them with it and a device's own builds (NCNN, int8) never mix with another model's.


def cached_onnx_in(cache: Path, sha256: str) -> Path:
    """cache/<sha256>.onnx: the ONNX of a model file whose content hashes to sha256."""
    return Path(cache) / f"{sha256}.onnx"


def ncnn_files_beside(onnx: Path, variant: str = "ncnn") -> tuple[Path, Path, Path]:
    """<stem>.<variant>.param/.bin/.json beside the ONNX: its NCNN model ("ncnn") or NCNN int8 ("ncnn-int8")."""
    onnx = Path(onnx)
    return tuple(onnx.with_name(f"{onnx.stem}.{variant}.{ext}") for ext in ("param", "bin", "json"))


def int8_onnx_beside(fp32_onnx: Path) -> Path:
    """<stem>.int8.onnx: the ONNX Runtime int8 model the engine timing keeps (its report: .int8.json)."""
    fp32_onnx = Path(fp32_onnx)
    return fp32_onnx.with_name(f"{fp32_onnx.stem}.int8.onnx")


def int8_candidate_beside(int8_onnx: Path, recipe: str) -> Path:
    """<stem>.int8.<recipe>.onnx: one int8 recipe's model, every one kept so a new bar needs no new timing."""
    int8_onnx = Path(int8_onnx)
    return int8_onnx.with_name(f"{int8_onnx.stem}.{recipe}.onnx")


def timing_report_beside(int8_onnx: Path) -> Path:
    """<stem>.int8.json: the engine timing's report (its table and auto's verdict) for this device."""
    return Path(int8_onnx).with_suffix(".json")
