"""Turn each frame's tracked detections into event transitions: pure logic, no threads, no I/O, no clock.

A tracked object is a candidate from the first frame it is seen on. It opens an event once it has been seen
on `min_frames` frames with a score of at least `min_score`, and the event closes once the object has been
gone for `close_after_s` (measured from the last frame it was seen on, with the `now` the caller passes).
The best-scoring sighting is reported as it improves, before the event opens too, so the caller can keep
that frame's picture: an event's snapshot is its best moment, not its first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.events.settings import EventSettings

OPEN, BEST, CLOSE = "open", "best", "close"


@dataclass
class Candidate:
    """One tracked object: what has been seen of it so far."""

    key: int  # the track id (or a stand-in per class when there is no tracker)
    track_id: int | None
    class_id: int
    first_seen: float
    first_video_s: float | None
    last_seen: float = 0.0
    last_video_s: float | None = None
    frames: int = 0  # frames it was seen on
    hits: int = 0  # of those, frames with a score of at least min_score
    best_score: float = -1.0
    best_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    opened: bool = False
    payload: dict = field(default_factory=dict)  # the caller's: event id, best frame's picture


@dataclass(frozen=True)
class Transition:
    """What happened to a candidate on this frame; `index` is its detection's row (None on close)."""

    kind: str
    candidate: Candidate
    index: int | None = None


class EventDetector:
    """Follow candidates frame by frame and say when events open, get a better sighting, and close."""

    def __init__(self, settings: EventSettings, class_ids: frozenset[int] | None = None):
        self.settings = settings
        self.class_ids = class_ids  # None: every class
        self.candidates: dict[int, Candidate] = {}

    @property
    def open_count(self) -> int:
        return sum(1 for c in self.candidates.values() if c.opened)

    def update(self, now: float, video_s: float | None, boxes: np.ndarray, scores: np.ndarray,
               class_ids: np.ndarray, track_ids: np.ndarray | None) -> list[Transition]:
        """Take one frame's detections (seen at `now`, `video_s` into the video); return its transitions."""
        transitions: list[Transition] = []
        seen: set[int] = set()
        for index in range(len(scores)):
            class_id = int(class_ids[index])
            if self.class_ids is not None and class_id not in self.class_ids:
                continue
            track_id = int(track_ids[index]) if track_ids is not None else None
            # Without a tracker, "an object of this class is in view" is the best we can follow.
            key = track_id if track_id is not None else -1 - class_id
            if key in seen:
                continue  # one sighting per object per frame
            seen.add(key)
            candidate = self.candidates.get(key)
            if candidate is None:
                candidate = self.candidates[key] = Candidate(key, track_id, class_id, now, video_s)
            transitions.extend(self._sighting(candidate, index, now, video_s, float(scores[index]), boxes[index]))
        transitions.extend(self._expire(now, seen))
        return transitions

    def _sighting(self, candidate: Candidate, index: int, now: float, video_s: float | None, score: float,
                  box: np.ndarray) -> list[Transition]:
        candidate.last_seen, candidate.last_video_s = now, video_s
        candidate.frames += 1
        if score < self.settings.min_score:
            return []
        candidate.hits += 1
        transitions = []
        if score > candidate.best_score:
            candidate.best_score = score
            candidate.best_box = tuple(float(v) for v in box[:4])
            transitions.append(Transition(BEST, candidate, index))
        if not candidate.opened and candidate.hits >= self.settings.min_frames:
            candidate.opened = True
            transitions.append(Transition(OPEN, candidate, index))
        return transitions

    def _expire(self, now: float, seen: set[int]) -> list[Transition]:
        """Forget candidates gone for close_after_s; the opened ones close."""
        transitions = []
        for key, candidate in list(self.candidates.items()):
            if key not in seen and now - candidate.last_seen >= self.settings.close_after_s:
                del self.candidates[key]
                if candidate.opened:
                    transitions.append(Transition(CLOSE, candidate))
        return transitions

    def finish(self) -> list[Transition]:
        """Close every open event now (the stream ended, or its tracks were reset) and forget all candidates."""
        closing = [Transition(CLOSE, c) for c in self.candidates.values() if c.opened]
        self.candidates.clear()
        return closing
