"""The producer's tap that records events, and the writer thread that stores them.

The tap runs on the stream's render thread after each published frame, so it only does cheap work: it feeds
the frame's tracked detections to the EventDetector and, when an object has its best sighting so far, keeps a
reference to that frame's annotated JPEG (bytes the hub already holds) and a copy of the box's pixels from the
raw frame. Saving (JPEG-encoding the crop, writing files, SQLite) goes through a bounded queue to a writer
thread; when the queue is full the save is dropped and counted, never waited for. A dropped close is retried
on the next frames; a dropped open or update is superseded by the next save of that event, which carries the
whole record and any picture not yet saved.
"""

from __future__ import annotations

import dataclasses

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from server.events.detector import BEST, CLOSE, OPEN, Candidate, EventDetector, Transition
from server.events.settings import EventSettings
from server.events.store import EventRecord, EventStore

logger = logging.getLogger(__name__)

QUEUE_SIZE = 64
UPDATE_INTERVAL_S = 1.0  # an open event's better sighting is saved at most this often
MAX_RETRIES = 256  # closes waiting for room in the queue
CROP_JPEG_QUALITY = 90
WRITER_POLL_S = 0.2
JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Save:
    """One queued write: the whole record, and the pictures not yet saved (None: keep the stored ones)."""

    record: EventRecord
    snapshot: bytes | None
    crop: np.ndarray | None
    generation: int


def crop_of(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    """A copy of the box's pixels (clipped to the image), or None when nothing of it is inside."""
    height, width = image.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x2 <= x1 or y2 <= y1:
        return None
    return image[y1:y2, x1:x2].copy()


def encode_crop(crop: np.ndarray | None) -> bytes | None:
    if crop is None:
        return None
    ok, buffer = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
    if not ok:
        logger.warning("could not encode an event crop of shape %s", crop.shape)
        return None
    return buffer.tobytes()


def chained(*taps: Callable | None) -> Callable | None:
    """One on_publish tap calling each given one in turn (None when none is given)."""
    taps = tuple(t for t in taps if t is not None)
    if not taps:
        return None
    if len(taps) == 1:
        return taps[0]

    def tap(*args) -> None:
        for each in taps:
            each(*args)

    return tap


class EventWriter:
    """The thread that saves events, fed by a bounded queue; submit never blocks unless asked to."""

    def __init__(self, store: EventStore, queue_size: int = QUEUE_SIZE):
        self.store = store
        self.queue: queue.Queue[Save | None] = queue.Queue(queue_size)  # None: wake up, maybe to stop
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self.saved = 0
        self.failed = 0

    def start(self) -> EventWriter:
        self.thread.start()
        return self

    def submit(self, save: Save, wait_s: float = 0.0) -> bool:
        """Queue a save; False when the queue stayed full (wait_s 0: not waiting at all)."""
        try:
            if wait_s > 0:
                self.queue.put(save, timeout=wait_s)
            else:
                self.queue.put_nowait(save)
        except queue.Full:
            return False
        return True

    def finish(self) -> None:
        """Save what is queued, then end the thread (without waiting for it: see join)."""
        self._stopping.set()
        try:
            self.queue.put_nowait(None)  # wakes the thread now; when full it wakes within WRITER_POLL_S
        except queue.Full:
            pass

    def join(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """Wait for the thread to have saved everything and ended."""
        self.finish()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)
            if self.thread.is_alive():
                logger.warning("event writer did not finish within %.0f s", timeout)

    def _run(self) -> None:
        while True:
            try:
                save = self.queue.get(timeout=WRITER_POLL_S)
            except queue.Empty:
                save = None
            if save is not None:
                self._write(save)
            elif self._stopping.is_set() and self.queue.empty():
                return

    def _write(self, save: Save) -> None:
        try:
            if self.store.save(save.record, save.snapshot, encode_crop(save.crop), save.generation):
                self.saved += 1
        except Exception:  # a full disk or a broken database must not end the writer
            self.failed += 1
            logger.exception("saving event %d failed", save.record.id)


class EventSession:
    """The events of one running stream: its detector, its writer, and the tap the producer calls."""

    def __init__(self, recorder: EventRecorder, source: str, class_names: list[str], fps: float, live: bool):
        self.recorder = recorder
        self.store = recorder.store
        self.clock = recorder.clock
        self.source = source
        self.class_names = class_names
        self.fps = fps if fps > 0 else None
        self.live = live
        class_ids, self.unknown_classes = recorder.settings.class_ids(class_names)
        if self.unknown_classes:
            logger.warning("event classes not in the model, ignored: %s", ", ".join(self.unknown_classes))
        self.detector = EventDetector(recorder.settings, class_ids)
        self.writer = EventWriter(self.store, recorder.queue_size).start()
        self.open_count = 0
        self._retries: list[Save] = []
        self._lock = threading.Lock()  # the tap against finish and forget, from other threads
        self._finished = False

    # -- the tap (render thread) ---------------------------------------------------------------
    def tap(self, detected, result, published_at: float) -> None:
        """After each published frame: feed its detections to the detector and queue what must be saved."""
        frame = detected.frame
        now = self.clock()
        with self._lock:
            if self._finished:
                return
            self._resubmit()
            if frame.position == 0 and frame.index > 0:
                # As for the stream itself: the video looped or the live source reconnected, and the
                # tracker starts its ids again, so what was open is over.
                self._apply(self.detector.finish(), frame, result, now)
            video_s = None if self.live or self.fps is None else frame.position / self.fps
            detections = result.detections
            transitions = self.detector.update(now, video_s, detections.boxes, detections.scores,
                                               detections.class_ids, detections.track_ids)
            self._apply(transitions, frame, result, now)
            self._save_better_sightings(now)
            self.open_count = self.detector.open_count

    def _apply(self, transitions: list[Transition], frame, result, now: float) -> None:
        for transition in transitions:
            candidate = transition.candidate
            if transition.kind == BEST:
                payload = candidate.payload
                payload["snapshot"] = result.jpeg
                payload["crop"] = crop_of(frame.image, candidate.best_box)
                payload["dirty"] = True
            elif transition.kind == OPEN:
                candidate.payload["id"] = self.store.new_id()
                self._save(candidate, now, closing=False)
                self._announce(candidate, closing=False)
            elif transition.kind == CLOSE:
                self._save(candidate, now, closing=True)
                self._announce(candidate, closing=True)

    def _announce(self, candidate: Candidate, closing: bool) -> None:
        """Tell the outputs (webhook, MQTT) an event opened or closed: a put on their queues, never a wait."""
        outputs = self.recorder.outputs
        event = dataclasses.asdict(self._record(candidate, closing))
        (outputs.event_closed if closing else outputs.event_opened)(event, candidate.payload.get("snapshot"))

    def _save_better_sightings(self, now: float) -> None:
        for candidate in self.detector.candidates.values():
            payload = candidate.payload
            if candidate.opened and payload.get("dirty") and now - payload.get("saved_at", 0.0) >= UPDATE_INTERVAL_S:
                self._save(candidate, now, closing=False)

    def _save(self, candidate: Candidate, now: float, closing: bool, wait_s: float = 0.0) -> None:
        payload = candidate.payload
        dirty = payload.get("dirty", False)
        save = Save(self._record(candidate, closing), payload.get("snapshot") if dirty else None,
                    payload.get("crop") if dirty else None, self.store.generation)
        payload["saved_at"] = now
        if self.writer.submit(save, wait_s):
            payload["dirty"] = False
            return
        self.recorder.count_drop()
        if closing and len(self._retries) < MAX_RETRIES:
            self._retries.append(save)  # the last word on an event: worth another try

    def _resubmit(self) -> None:
        while self._retries and self.writer.submit(self._retries[0]):
            self._retries.pop(0)

    def _record(self, candidate: Candidate, closing: bool) -> EventRecord:
        class_id = candidate.class_id
        name = self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)
        return EventRecord(
            id=candidate.payload["id"],
            class_name=name,
            class_id=class_id,
            track_id=candidate.track_id,
            source=self.source,
            start_ts=candidate.first_seen,
            end_ts=candidate.last_seen if closing else None,
            last_seen_ts=candidate.last_seen,
            video_start_s=candidate.first_video_s,
            video_end_s=candidate.last_video_s,
            best_score=candidate.best_score,
            box=candidate.best_box,
            frames=candidate.frames,
        )

    # -- control (other threads) ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return not self._finished

    def finish(self) -> None:
        """The stream ended: close what is open (saved and announced), save what is queued and end the writer."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            now = self.clock()
            for save in self._retries:
                self.writer.submit(save, wait_s=JOIN_TIMEOUT_S / 5)
            self._retries.clear()
            for transition in self.detector.finish():
                # Off the render thread: waiting a moment for room beats losing the event's end.
                self._save(transition.candidate, now, closing=True, wait_s=JOIN_TIMEOUT_S / 5)
                self._announce(transition.candidate, closing=True)  # a close the outputs hear as any other
            self.open_count = 0
        # Not joined here: this runs on the producer's thread as the stream ends, and a viewer asking whether
        # the stream still runs must not wait for disk writes. EventRecorder.stop joins it.
        self.writer.finish()

    def forget(self) -> None:
        """Drop what is being followed (the stored events are being cleared); new events open as objects stay."""
        with self._lock:
            self.detector.candidates.clear()
            self._retries.clear()
            self.open_count = 0


class NoSession:
    """The events of a stream when none are recorded (--no-events): no tap, nothing to finish."""

    tap = None  # chained() leaves it out: the producer calls nothing for events
    running = False

    def finish(self) -> None:
        """Nothing was recorded."""


NO_SESSION = NoSession()


class EventRecorder:
    """The events of this server: the store, the settings, the running stream's session and the drop count."""

    def __init__(self, store: EventStore, settings: EventSettings = EventSettings(), queue_size: int = QUEUE_SIZE,
                 clock: Callable[[], float] = time.time, *, outputs):
        self.store = store
        # server.outputs.Outputs (Outputs() when none is configured): told of every event that opens or closes
        self.outputs = outputs
        self.settings = settings
        self.queue_size = queue_size
        self.clock = clock
        self.dropped = 0
        self.session: EventSession | None = None
        self._drop_lock = threading.Lock()

    def begin(self, source: str, class_names: list[str], fps: float, live: bool) -> EventSession | NoSession:
        """Start recording a new stream's events (NO_SESSION when events are turned off); its tap goes to
        on_publish."""
        self.stop()
        if not self.settings.enabled:
            return NO_SESSION
        self.session = EventSession(self, source, class_names, fps, live)
        return self.session

    def stop(self) -> None:
        """Close the last stream's open events and wait for its writer to have saved them (with a timeout)."""
        session = self.session
        if session is not None:
            session.finish()
            session.writer.join()

    def count_drop(self) -> None:
        with self._drop_lock:
            self.dropped += 1

    def clear(self) -> int:
        """Delete every stored event; a running stream keeps recording new ones."""
        session = self.session
        if session is not None:
            session.forget()
        with self._drop_lock:
            self.dropped = 0
        return self.store.clear()

    def status(self) -> dict:
        session = self.session
        running = session is not None and session.running
        return {
            **self.store.summary(),
            "open": session.open_count if running else 0,
            "dropped": self.dropped,
            "queued": session.writer.queue.qsize() if running else 0,
            "failed": session.writer.failed if session is not None else 0,  # saves the disk or database refused
            "enabled": self.settings.enabled,
            "settings": self.settings.as_dict(),
            "unknown_classes": session.unknown_classes if session is not None else [],
        }
