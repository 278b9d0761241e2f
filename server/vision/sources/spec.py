"""What a user may name as a live source, and how it is named back: parse, check, mask credentials.

Credentials in a URL (rtsp://user:password@camera/...) are used only to open the stream: everything that is
logged or shown goes through SourceSpec.label, which masks the password.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from urllib.parse import urlsplit

from server.redaction import redact

V4L2_PATH = re.compile(r"/dev/video\d{1,3}")
URL_KINDS = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http"}
CAMERA_URL = "camera"


class SourceRejected(ValueError):
    """The source cannot be used: unknown kind, missing device, or unreachable (HTTP 400)."""


@dataclass(frozen=True)
class SourceSpec:
    """What to open (target, which may hold credentials) and how to name it in logs and status (label)."""

    kind: str  # rtsp | http | hls | v4l2 | camera
    target: str
    label: str

    def __repr__(self) -> str:  # never let a password reach a log through repr()
        return f"SourceSpec(kind={self.kind!r}, label={self.label!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class SourceInfo:
    width: int
    height: int
    fps: float


def parse_source(text: str, camera_command: str = "") -> SourceSpec:
    """Check what the user typed and say which kind of source it is; raise SourceRejected otherwise."""
    text = (text or "").strip()
    if not text:
        raise SourceRejected("send {\"url\": ...}: an rtsp://, rtsps://, http(s):// (MJPEG or HLS) URL or /dev/videoN")
    if text == CAMERA_URL:
        if not camera_command:
            raise SourceRejected("no camera command is configured: start the server with --camera CMD")
        return SourceSpec("camera", camera_command, "camera command")
    if text.startswith("/"):
        return _device_spec(text)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme not in URL_KINDS:
        shown = f"scheme '{scheme}'" if scheme else f"'{text[:80]}'"
        raise SourceRejected(
            f"unsupported source {shown}: use rtsp://, rtsps://, http(s):// (MJPEG or HLS) or /dev/videoN"
        )
    parts = urlsplit(text)
    if not parts.hostname:
        raise SourceRejected(f"the URL {redact(text)} has no host")
    kind = URL_KINDS[scheme]
    if kind == "http" and parts.path.lower().endswith(".m3u8"):
        kind = "hls"
    return SourceSpec(kind, text, redact(text))


def _device_spec(path: str) -> SourceSpec:
    """Accept /dev/videoN only (no other local path is ever opened), and only if it is a device."""
    if not V4L2_PATH.fullmatch(path):
        raise SourceRejected(f"local path {path[:80]} is not a camera: only /dev/videoN devices are accepted")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SourceRejected(f"no such camera device {path}: is the webcam plugged in (tried to open it with V4L2)?")
    except OSError as exc:
        raise SourceRejected(f"cannot open {path} ({exc.strerror}): tried V4L2")
    if not stat.S_ISCHR(mode):
        raise SourceRejected(f"{path} is not a character device: tried to open it as a V4L2 camera")
    return SourceSpec("v4l2", path, path)


def describe(spec: SourceSpec, info: SourceInfo | None, measured_fps: float | None = None) -> dict:
    """What status shows of a source before its counters: kind, masked URL, geometry, fps."""
    return {
        "kind": spec.kind,
        "url": spec.label,
        "width": info.width if info else None,
        "height": info.height if info else None,
        "fps": measured_fps or (info.fps if info else None),
    }
