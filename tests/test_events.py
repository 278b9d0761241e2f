"""Events without a server: the detector on synthetic detections, the store on disk, the recorder's tap and writer."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from harness.waiting import wait_for
from server.config import Config
from server.events import recorder as recorder_module
from server.events.detector import BEST, CLOSE, OPEN, EventDetector
from server.events.query import EventQueryError, parse_event_id, parse_query
from server.events.recorder import EventRecorder, chained
from server.events.settings import EventSettings, EventSettingsError, Retention, settings_from_config
from server.events.store import EventQuery, EventRecord, EventStore
from server.files import temporary_name_for
from server.outputs import Outputs
from server.vision.processing import Detections
from server.vision.sources import Frame


def frame_detections(*objects):
    """Detections of (track_id, class_id, score, box) tuples, as the tracker hands them over."""
    boxes = np.array([o[3] for o in objects], np.float32).reshape(-1, 4)
    return (boxes, np.array([o[2] for o in objects], np.float32), np.array([o[1] for o in objects], np.int64),
            np.array([o[0] for o in objects], np.int64))


BOX = (10.0, 20.0, 50.0, 80.0)


def kinds(transitions):
    return [(t.kind, t.candidate.key) for t in transitions]


# -- the detector ----------------------------------------------------------------------------------


def test_an_event_opens_on_the_nth_frame_above_the_score():
    detector = EventDetector(EventSettings(min_frames=3, min_score=0.5))
    seen = [kinds(detector.update(i, None, *frame_detections((7, 0, 0.9, BOX)))) for i in range(4)]
    assert seen == [[(BEST, 7)], [], [(OPEN, 7)], []]
    assert detector.open_count == 1


def test_sightings_below_the_score_do_not_count():
    detector = EventDetector(EventSettings(min_frames=2, min_score=0.5))
    for i, score in enumerate((0.4, 0.45, 0.6, 0.3, 0.55)):
        opened = [t for t in detector.update(i, None, *frame_detections((1, 0, score, BOX))) if t.kind == OPEN]
        assert bool(opened) == (i == 4), i
    assert detector.candidates[1].frames == 5 and detector.candidates[1].hits == 2


def test_an_event_closes_once_gone_for_close_after_seconds():
    detector = EventDetector(EventSettings(min_frames=1, close_after_s=2.0))
    detector.update(1.0, 0.5, *frame_detections((3, 0, 0.9, BOX)))
    assert detector.update(2.9, 2.4, *frame_detections()) == []
    closing = detector.update(3.0, 2.5, *frame_detections())
    assert kinds(closing) == [(CLOSE, 3)]
    candidate = closing[0].candidate
    assert (candidate.first_seen, candidate.last_seen, candidate.last_video_s) == (1.0, 1.0, 0.5)
    assert detector.candidates == {} and detector.open_count == 0


def test_seen_again_before_close_after_keeps_one_event():
    detector = EventDetector(EventSettings(min_frames=1, close_after_s=2.0))
    opened = [t.kind for t in detector.update(0.0, None, *frame_detections((3, 0, 0.9, BOX)))]
    assert opened == [BEST, OPEN]
    assert detector.update(1.9, None, *frame_detections()) == []
    assert kinds(detector.update(1.95, None, *frame_detections((3, 0, 0.8, BOX)))) == []
    assert detector.update(3.9, None, *frame_detections()) == []  # 1.95 s after the last sighting
    assert kinds(detector.update(3.95, None, *frame_detections())) == [(CLOSE, 3)]


def test_a_candidate_that_never_opened_is_forgotten_without_an_event():
    detector = EventDetector(EventSettings(min_frames=5, close_after_s=1.0))
    detector.update(0.0, None, *frame_detections((4, 0, 0.9, BOX)))
    assert detector.update(5.0, None, *frame_detections()) == [] and detector.candidates == {}


def test_only_the_chosen_classes_make_events():
    settings = EventSettings(classes=("square",), min_frames=1)
    class_ids, unknown = settings.class_ids(["circle", "square", "star"])
    assert class_ids == {1} and unknown == []
    detector = EventDetector(settings, class_ids)
    transitions = detector.update(0, None, *frame_detections((1, 0, 0.9, BOX), (2, 1, 0.9, BOX), (3, 2, 0.9, BOX)))
    assert {t.candidate.key for t in transitions} == {2}
    assert EventSettings(classes=("2", "lion")).class_ids(["a", "b", "c"]) == ({2}, ["lion"])


def test_the_best_score_and_its_box_are_kept():
    detector = EventDetector(EventSettings(min_frames=1))
    best_frames = []
    for i, score in enumerate((0.7, 0.95, 0.8)):
        box = (i, i, i + 10, i + 10)
        best_frames += [i for t in detector.update(i, None, *frame_detections((1, 0, score, box))) if t.kind == BEST]
    candidate = detector.candidates[1]
    assert best_frames == [0, 1] and candidate.best_score == pytest.approx(0.95)
    assert candidate.best_box == (1, 1, 11, 11)


def test_finish_closes_what_is_open_and_forgets_the_rest():
    detector = EventDetector(EventSettings(min_frames=2))
    detector.update(0, None, *frame_detections((1, 0, 0.9, BOX), (2, 0, 0.9, BOX)))
    detector.update(1, None, *frame_detections((1, 0, 0.9, BOX)))
    assert kinds(detector.finish()) == [(CLOSE, 1)] and detector.candidates == {}


def test_without_track_ids_each_class_in_view_is_one_event():
    detector = EventDetector(EventSettings(min_frames=2))
    boxes, scores, classes, _ = frame_detections((0, 4, 0.9, BOX), (0, 4, 0.8, BOX))
    detector.update(0, None, boxes, scores, classes, None)
    assert [t.kind for t in detector.update(1, None, boxes, scores, classes, None)] == [OPEN]


def test_settings_come_from_flags_and_refuse_bad_values():
    settings = settings_from_config(Config(event_classes="circle, square,circle", event_min_frames=2))
    assert settings.classes == ("circle", "square") and settings.min_frames == 2
    assert settings_from_config(Config()) == EventSettings()
    for bad in ({"event_min_score": 0}, {"event_min_score": 1.5}, {"event_min_frames": 0},
                {"event_close_after": 0}, {"event_classes": "a\x00b"}):
        with pytest.raises(EventSettingsError):
            settings_from_config(Config(**bad))


# -- the store -------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(event_id: int, start: float, end: float | None = None, class_name: str = "circle") -> EventRecord:
    return EventRecord(event_id, class_name, 0, 1, "clip.mp4", start, end, end or start, 0.0, 1.0, 0.9, BOX, 10)


def files_in(store: EventStore) -> list[str]:
    return sorted(p.name for p in store.media.iterdir()) if store.media.exists() else []


def save_closed(store: EventStore, event_id: int, size: int = 1000, start: float = 0.0) -> None:
    start = start or time.time() - 100 + event_id
    assert store.save(record(event_id, start, start + 1), b"s" * size, b"c" * size, store.generation)


def test_nothing_is_on_disk_until_the_first_event(tmp_path):
    store = EventStore(tmp_path / "events")
    assert store.summary() == {"count": 0, "bytes": 0} and store.query(EventQuery()) == []
    assert list(tmp_path.iterdir()) == []
    save_closed(store, 1)
    assert files_in(store) == ["1-crop.jpg", "1-snapshot.jpg"]
    assert store.summary()["count"] == 1 and store.summary()["bytes"] > 2000


def test_retention_by_count_deletes_the_oldest_with_their_files(tmp_path):
    store = EventStore(tmp_path / "events", Retention(max_count=3, max_age_s=0, max_bytes=0))
    for event_id in range(1, 6):
        save_closed(store, event_id)
    assert [e["id"] for e in store.query(EventQuery())] == [5, 4, 3]
    assert files_in(store) == sorted(f"{i}-{k}.jpg" for i in (3, 4, 5) for k in ("crop", "snapshot"))


def test_retention_by_age(tmp_path):
    clock = Clock(1000.0)
    store = EventStore(tmp_path / "events", Retention(max_count=0, max_age_s=100, max_bytes=0), clock=clock)
    for event_id, start in ((1, 850.0), (2, 905.0), (3, 990.0)):
        save_closed(store, event_id, start=start)
    assert [e["id"] for e in store.query(EventQuery())] == [3, 2]  # event 1 ended at 851, 149 s ago
    clock.now = 1200.0
    save_closed(store, 4, start=1199.0)
    assert [e["id"] for e in store.query(EventQuery())] == [4] and files_in(store) == ["4-crop.jpg", "4-snapshot.jpg"]


def test_retention_by_bytes_deletes_oldest_first_and_never_an_open_event(tmp_path):
    store = EventStore(tmp_path / "events", Retention(max_count=0, max_age_s=0, max_bytes=5000))
    assert store.save(record(1, time.time() - 200), b"s" * 1000, b"c" * 1000, 0)  # open: kept whatever the bounds
    for event_id in (2, 3, 4):
        save_closed(store, event_id)
    assert [e["id"] for e in store.query(EventQuery())] == [4, 1]
    assert store.summary()["count"] == 2


def test_events_survive_reopening_and_open_ones_are_closed_at_their_last_sighting(tmp_path):
    store = EventStore(tmp_path / "events")
    save_closed(store, 1)
    now = time.time()
    assert store.save(EventRecord(2, "star", 3, 9, "cam", now, None, now + 2.5, None, None, 0.8, BOX, 4), b"j", b"k", 0)
    partial = temporary_name_for(store.picture_path(2, "snapshot"))
    partial.write_bytes(b"half")  # a write the crash interrupted
    store.close()

    reopened = EventStore(tmp_path / "events")
    assert reopened.query(EventQuery()) == []  # nothing shown before the start-up step reopens it
    reopened.open()
    events = {e["id"]: e for e in reopened.query(EventQuery())}
    assert set(events) == {1, 2}
    assert events[2]["open"] is False and events[2]["end_ts"] == now + 2.5 and events[2]["class"] == "star"
    assert not partial.exists() and reopened.picture(2, "snapshot").read_bytes() == b"j"
    assert reopened.new_id() > 2


def test_clear_deletes_everything_and_discards_saves_prepared_before_it(tmp_path):
    store = EventStore(tmp_path / "events")
    save_closed(store, 1)
    stale = store.generation
    assert store.clear() == 1
    assert list(tmp_path.iterdir()) == []
    assert store.save(record(1, 1.0, 2.0), b"s", b"c", stale) is False
    assert list(tmp_path.iterdir()) == [] and store.query(EventQuery()) == []


def test_queries_filter_by_class_and_time_and_page_by_cursor(tmp_path):
    store = EventStore(tmp_path / "events", Retention(0, 0, 0))
    for event_id in range(1, 8):
        assert store.save(record(event_id, 100.0 * event_id, None, "circle" if event_id % 2 else "square"), None,
                          None, 0)
    assert [e["id"] for e in store.query(EventQuery(classes=("square",)))] == [6, 4, 2]
    assert [e["id"] for e in store.query(EventQuery(since=300, until=500))] == [5, 4, 3]
    first = store.query(EventQuery(limit=3))
    second = store.query(EventQuery(limit=3, before=first[-1]["id"]))
    assert [e["id"] for e in first + second] == [7, 6, 5, 4, 3, 2]
    assert store.classes() == ["circle", "square"]


def test_query_values_are_checked():
    assert parse_query({"class": "circle,star", "since": "2026-12-02T14:02:00Z", "limit": "10"}).classes == (
        "circle", "star")
    assert parse_query({"since": "2026-12-02T14:02:00"}).since == parse_query({"since": "1796220120"}).since
    for bad in ({"limit": "0"}, {"limit": "501"}, {"limit": "ten"}, {"since": "yesterday"}, {"since": "nan"},
                {"until": "-5"}, {"since": "20", "until": "10"}, {"class": ","}, {"before": "x"}, {"colour": "red"}):
        with pytest.raises(EventQueryError):
            parse_query(bad)
    for bad in ("0", "-1", "1e3", "abc", "9" * 20, "١٢"):
        with pytest.raises(EventQueryError):
            parse_event_id(bad)
    assert parse_event_id("42") == 42


# -- the recorder: the producer's tap and the writer -------------------------------------------------


def published(index: int, objects, position: int | None = None, jpeg: bytes | None = None):
    """A (detected, result) pair as StreamRunner passes them to on_publish."""
    image = np.full((120, 160, 3), index % 256, np.uint8)
    frame = Frame(index, image, 1.0, index if position is None else position)
    boxes, scores, classes, tracks = frame_detections(*objects)
    detections = Detections(boxes, scores, classes, tracks)
    result = SimpleNamespace(jpeg=jpeg or f"frame {index}".encode(), detections=detections)
    return SimpleNamespace(frame=frame), result


def test_recorded_event_keeps_its_best_frame_and_the_crop_of_its_box(tmp_path):
    clock = Clock()
    settings = EventSettings(min_frames=2, close_after_s=1.0)
    recorder = EventRecorder(EventStore(tmp_path / "events", clock=clock), settings, clock=clock, outputs=Outputs())
    session = recorder.begin("clip.mp4", ["circle", "square"], 10.0, live=False)
    for index, score in enumerate((0.7, 0.95, 0.8)):
        clock.now += 0.1
        session.tap(*published(index + 1, [(5, 1, score, (20, 30, 60, 90))]), 0.0)
    clock.now += 2.0
    session.tap(*published(4, []), 0.0)
    recorder.stop()
    [event] = recorder.store.query(EventQuery())
    assert (event["class"], event["track_id"], event["best_score"], event["open"]) == ("square", 5, 0.95, False)
    assert event["video_start_s"] == pytest.approx(0.1) and event["video_end_s"] == pytest.approx(0.3)
    assert event["source"] == "clip.mp4" and event["frames"] == 3
    assert recorder.store.picture(event["id"], "snapshot").read_bytes() == b"frame 2"
    crop = cv2.imread(str(recorder.store.picture(event["id"], "crop")))
    assert crop.shape == (60, 40, 3) and abs(int(crop.mean()) - 2) <= 2  # the pixels of frame 2
    assert recorder.status()["open"] == 0 and recorder.status()["count"] == 1


def test_a_restarted_video_closes_the_open_events(tmp_path):
    recorder = EventRecorder(EventStore(tmp_path / "events"), EventSettings(min_frames=1, close_after_s=60),
                             outputs=Outputs())
    session = recorder.begin("clip.mp4", ["circle"], 10.0, live=False)
    session.tap(*published(1, [(1, 0, 0.9, BOX)]), 0.0)
    session.tap(*published(2, [(1, 0, 0.9, BOX)], position=0), 0.0)  # looped: track 1 is a new object
    recorder.stop()
    events = recorder.store.query(EventQuery())
    assert len(events) == 2 and sorted(e["open"] for e in events) == [False, False]


@dataclass
class Gate:
    """Holds the store's lock from a test thread, so the writer stalls as it would on a very slow disk."""

    store: EventStore

    def __enter__(self):
        self.store._lock.acquire()
        return self

    def __exit__(self, *exc):
        self.store._lock.release()


def test_a_stalled_writer_never_blocks_the_producer_drops_are_counted_and_caught_up(tmp_path):
    clock = Clock()
    store = EventStore(tmp_path / "events", clock=clock)
    recorder = EventRecorder(store, EventSettings(min_frames=1, close_after_s=60), queue_size=2, clock=clock,
                             outputs=Outputs())
    session = recorder.begin("clip.mp4", ["circle"], 10.0, live=False)
    objects = [(track, 0, 0.9, (track, 0, track + 20, 20)) for track in range(1, 11)]
    with Gate(store):
        producer = threading.Thread(target=lambda: [session.tap(*published(i, objects), 0.0) for i in (1, 2)])
        producer.start()
        producer.join(timeout=60)  # a guard against a deadlock, not a speed bound
        assert not producer.is_alive(), "the tap waited for the writer"
        status = recorder.status()
        assert status["dropped"] >= 10 - 2 - 1 and status["open"] == 10 and status["count"] == 0
    clock.now += recorder_module.UPDATE_INTERVAL_S  # the dropped opens are saved with the next frame's updates
    session.tap(*published(3, objects), 0.0)
    recorder.stop()
    events = store.query(EventQuery())
    assert len(events) == 10 and all(not e["open"] and set(e["pictures"]) == {"snapshot", "crop"} for e in events)


def test_a_cleared_store_is_not_refilled_by_saves_already_queued(tmp_path):
    store = EventStore(tmp_path / "events")
    recorder = EventRecorder(store, EventSettings(min_frames=1, close_after_s=60), outputs=Outputs())
    session = recorder.begin("clip.mp4", ["circle"], 10.0, live=False)
    with Gate(store):
        session.tap(*published(1, [(1, 0, 0.9, BOX)]), 0.0)
        cleared = threading.Thread(target=recorder.clear)
        cleared.start()
    cleared.join(timeout=60)
    recorder.stop()
    assert store.query(EventQuery()) == [] and not (tmp_path / "events").exists()


def test_a_save_the_disk_refuses_is_counted_and_the_writer_goes_on(tmp_path):
    store = EventStore(tmp_path / "events")
    recorder = EventRecorder(store, EventSettings(min_frames=1, close_after_s=60), outputs=Outputs())
    (tmp_path / "events").mkdir()
    blocker = tmp_path / "events" / "media"
    blocker.write_text("a file where the pictures' folder belongs")
    session = recorder.begin("clip.mp4", ["circle"], 10.0, live=False)
    session.tap(*published(1, [(1, 0, 0.9, BOX)]), 0.0)
    assert wait_for(lambda: recorder.status()["failed"] == 1)
    assert store.query(EventQuery()) == []

    blocker.unlink()  # room again: the same writer saves the next event, and the first one's close
    session.tap(*published(2, [(1, 0, 0.9, BOX), (2, 0, 0.9, BOX)]), 0.0)
    recorder.stop()
    assert recorder.status()["failed"] == 1 and len(store.query(EventQuery())) == 2
    assert not list(store.media.glob("*.partial"))


def test_chained_taps_each_get_every_frame():
    calls = []
    tap = chained(lambda *a: calls.append(("live", a)), None, lambda *a: calls.append(("events", a)))
    tap(1, 2, 3.0)
    assert calls == [("live", (1, 2, 3.0)), ("events", (1, 2, 3.0))]
    assert chained(None, None) is None
