"""Which frames the network runs on, and the boxes of every other frame: the stream's and the export's one path.

Frames go in one at a time, in order; detected frames come out in the same order, sometimes later and several at
once. With interpolation the frames after a keyframe wait (at most detect_every - 1 of them, or
motion.MOVING_EVERY - 1 with `auto`) until the next keyframe is detected, and each gets boxes interpolated
between the two (keyframes.interpolate). Without it, a frame between keyframes gets the tracker's boxes at once,
as before. With `detect_every: auto` the motion rule (motion.decide) picks the keyframes, and a frame where
nothing changed keeps the boxes it follows without running anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from server.vision import keyframes, motion
from server.vision.motion import AUTO, Decision
from server.vision.pipeline import Detected, FramePipeline, Stopwatch
from server.vision.processing import Detections
from server.vision.settings import INTERPOLATE_CHOICES, Settings
from server.vision.sources.base import Frame

if TYPE_CHECKING:
    from server.vision.trace import TraceRecorder

INTERPOLATE_FILES, INTERPOLATE_ALWAYS, _ = INTERPOLATE_CHOICES


@dataclass(frozen=True)
class Keyframe:
    """The last frame the network ran on: where it is, its tracked boxes, its small grey image (auto only)."""

    index: int
    detections: Detections
    gray: np.ndarray | None


def interpolates(settings: Settings, live: bool) -> bool:
    """Whether frames between keyframes wait for the next keyframe (files by default; live sources if asked)."""
    return settings.interpolate == INTERPOLATE_ALWAYS or (settings.interpolate == INTERPOLATE_FILES and not live)


def held_at_most(settings: Settings) -> int:
    """Frames that wait for a later keyframe at most, with interpolation on."""
    return motion.MOVING_EVERY - 1 if settings.detect_every == AUTO else settings.detect_every - 1


def added_delay_frames(settings: Settings, live: bool) -> int:
    """Frame intervals a paced output trails its input by (0 without interpolation)."""
    return held_at_most(settings) if interpolates(settings, live) else 0


class Keyframer:
    """Run a FramePipeline's detect half on keyframes and give every frame its boxes, in order."""

    def __init__(self, pipeline: FramePipeline, fps: float, live: bool = False):
        self.pipeline = pipeline
        self.live = live
        self.ceiling = motion.ceiling_frames(fps)
        self.reset()

    def reset(self) -> None:
        """Forget the last keyframe (held frames are dropped: flush them first)."""
        self._held: list[tuple[Frame, TraceRecorder | None]] = []
        self._key: Keyframe | None = None
        self._last = Detections(track_ids=np.zeros((0,), np.int64))

    @property
    def held(self) -> int:
        return len(self._held)

    def push(self, frame: Frame, settings: Settings, trace: TraceRecorder | None = None) -> list[Detected]:
        """Take the next frame; return the frames whose boxes are now known, oldest first."""
        interpolating = interpolates(settings, self.live)
        out = [] if interpolating else self.flush(settings)  # interpolation was just turned off
        decision = self._decide(frame, settings)
        if decision is Decision.KEY:
            return [*out, *self._detect(frame, settings, trace)]
        if decision is Decision.STILL and not self._held:
            return [*out, self._still(frame, trace)]
        if interpolating:
            self._held.append((frame, trace))
            return out
        return [*out, self._tracked(frame, settings, trace)]

    def flush(self, settings: Settings) -> list[Detected]:
        """Detect the newest held frame as a keyframe and return every held frame (the end of a video or loop)."""
        if not self._held:
            return []
        frame, trace = self._held.pop()
        return self._detect(frame, settings, trace)

    def _decide(self, frame: Frame, settings: Settings) -> Decision:
        key = self._key
        if key is None or frame.index <= key.index:
            return Decision.KEY
        since = frame.index - key.index
        if settings.detect_every != AUTO:
            return Decision.KEY if since >= settings.detect_every else Decision.BETWEEN
        if key.gray is None:
            return Decision.KEY
        gray = motion.small_gray(frame.image)
        tracked = motion.track_mask(key.detections.boxes, frame.image.shape[:2], gray.shape, since)
        return motion.decide(motion.changed_cells(key.gray, gray), tracked, since, self.ceiling)

    def _detect(self, frame: Frame, settings: Settings, trace: TraceRecorder | None) -> list[Detected]:
        """Run the network on a keyframe; return the held frames, interpolated, then the keyframe."""
        item = self.pipeline.detect(frame, settings, trace, network=True)
        before = self._key
        gray = motion.small_gray(frame.image) if settings.detect_every == AUTO else None
        self._key = Keyframe(frame.index, item.detections, gray)
        self._last = item.detections
        held, self._held = self._held, []
        if before is None:  # nothing to interpolate from (cannot happen after a keyframe): the keyframe's boxes
            return [*(self._standing(f, t, item.detections) for f, t in held), item]
        return [*(self._interpolated(f, t, before, self._key) for f, t in held), item]

    def _interpolated(self, frame: Frame, trace, before: Keyframe, after: Keyframe) -> Detected:
        watch = Stopwatch()
        t = keyframes.fraction(frame.index, before.index, after.index)
        detections = keyframes.interpolate(before.detections, after.detections, t)
        watch.lap("track")
        return Detected(frame, detections, False, watch.timings, watch.spans, trace=trace)

    def _standing(self, frame: Frame, trace, detections: Detections) -> Detected:
        watch = Stopwatch()
        watch.lap("track")
        return Detected(frame, detections, False, watch.timings, watch.spans, trace=trace)

    def _still(self, frame: Frame, trace) -> Detected:
        """Nothing changed since the keyframe: the boxes shown last stand (no network, no tracker)."""
        return self._standing(frame, trace, self._last)

    def _tracked(self, frame: Frame, settings: Settings, trace) -> Detected:
        """Between keyframes without interpolation: the tracker moves the boxes onto this frame."""
        item = self.pipeline.detect(frame, settings, trace, network=False)
        self._last = item.detections
        return item
