"""Frame sources: video files and live cameras behind one protocol (base.Source) that the producer reads.

    spec         what a user may name as a live source; credentials masked
    file         video files: probe, sample, decode ahead (FrameSource)
    connections  one open live stream (OpenCV capture), probing
    camera       the --camera command's MJPEG stdout as a connection
    live         LiveSource: newest frame only, reconnect with backoff, lag and calibration samples
    choice       the source a stream will read (file or live), before and while it is open
"""

from server.vision.sources.base import CALIBRATION_FRAMES, DEFAULT_FPS, Frame, Source, sane_fps
from server.vision.sources.camera import CommandConnection
from server.vision.sources.choice import FileChoice, LiveChoice, SourceChoice
from server.vision.sources.connections import CaptureConnection, Connection, open_connection, probe_source
from server.vision.sources.file import VIDEO_EXTENSIONS, FrameSource, VideoInfo, VideoUnreadable, probe_video, sample_frames
from server.vision.sources.live import IDLE_COUNTERS, Backoff, LiveFrame, LiveOptions, LiveSource
from server.vision.sources.spec import CAMERA_URL, SourceInfo, SourceRejected, SourceSpec, describe, parse_source

__all__ = [
    "CALIBRATION_FRAMES", "CAMERA_URL", "DEFAULT_FPS", "IDLE_COUNTERS", "VIDEO_EXTENSIONS", "Backoff",
    "CaptureConnection", "CommandConnection", "Connection", "FileChoice", "Frame", "FrameSource", "LiveChoice",
    "LiveFrame", "LiveOptions", "LiveSource", "Source", "SourceChoice", "SourceInfo", "SourceRejected", "SourceSpec", "VideoInfo",
    "VideoUnreadable", "describe", "open_connection", "parse_source", "probe_source", "probe_video",
    "sample_frames", "sane_fps",
]
