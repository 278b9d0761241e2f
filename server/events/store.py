"""Stored events: one SQLite table plus a snapshot and a crop JPEG per event, in one folder (uploads/events/).

Nothing is on disk until the first event is saved, and clearing removes the folder, so an uploads folder
without events looks as it did before events existed. Files are written under a temporary name and renamed
into place, and a row names its files only once they are whole. SQLite runs in WAL mode behind one lock
(reads come from request threads, writes from the recorder's writer thread). Retention deletes the oldest
closed events first, files included, once there are too many, they are too old or they take too much space.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from server.events.settings import Retention
from server.files import TEMPORARY_PATTERN, write_bytes

logger = logging.getLogger(__name__)

DATABASE = "events.sqlite3"
MEDIA = "media"
KINDS = ("snapshot", "crop")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    class_name TEXT NOT NULL,
    class_id INTEGER NOT NULL,
    track_id INTEGER,
    source TEXT NOT NULL,
    start_ts REAL NOT NULL,
    end_ts REAL,
    last_seen_ts REAL NOT NULL,
    video_start_s REAL,
    video_end_s REAL,
    best_score REAL NOT NULL,
    box TEXT NOT NULL,
    frames INTEGER NOT NULL,
    snapshot_bytes INTEGER NOT NULL DEFAULT 0,
    crop_bytes INTEGER NOT NULL DEFAULT 0,
    updated_ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_start ON events (start_ts);
CREATE INDEX IF NOT EXISTS events_class ON events (class_name, id);
"""
COLUMNS = ("id", "class_name", "class_id", "track_id", "source", "start_ts", "end_ts", "last_seen_ts",
           "video_start_s", "video_end_s", "best_score", "box", "frames")


@dataclass(frozen=True)
class EventRecord:
    """An event as the recorder knows it; end_ts is None while it is open."""

    id: int
    class_name: str
    class_id: int
    track_id: int | None
    source: str
    start_ts: float
    end_ts: float | None
    last_seen_ts: float
    video_start_s: float | None
    video_end_s: float | None
    best_score: float
    box: tuple[float, float, float, float]
    frames: int


@dataclass(frozen=True)
class EventQuery:
    """Which events to list: classes (None: all), started within [since, until], ids below `before`."""

    classes: tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None
    before: int | None = None
    limit: int = 50


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def describe(row: sqlite3.Row) -> dict:
    """The JSON an event is shown as; "pictures" says which it has and their version (the web side makes them
    URLs)."""
    version = int(row["updated_ts"] * 1000)  # a new best sighting replaces the pictures: a new version
    return {
        "id": row["id"],
        "class": row["class_name"],
        "class_id": row["class_id"],
        "track_id": row["track_id"],
        "source": row["source"],
        "open": row["end_ts"] is None,
        "start": iso(row["start_ts"]),
        "end": iso(row["end_ts"]),
        "start_ts": row["start_ts"],
        "end_ts": row["end_ts"],
        "video_start_s": row["video_start_s"],
        "video_end_s": row["video_end_s"],
        "best_score": round(row["best_score"], 4),
        "box": json.loads(row["box"]),
        "frames": row["frames"],
        "pictures": {kind: version for kind in KINDS if row[f"{kind}_bytes"]},
    }


ROW_BYTES = 4096  # what one event's row and its journal may take in SQLite, for the free-space check


class EventStore:
    """The events of this uploads folder; every method is safe to call from any thread."""

    def __init__(self, folder: str | Path, retention: Retention = Retention(), clock=time.time, space=None):
        self.folder = Path(folder)
        self.space = space  # server.storage.DiskSpace: a save that would eat into the reserve is refused
        self.media = self.folder / MEDIA
        self.retention = retention
        self.clock = clock
        self.generation = 0  # bumped by clear(): saves prepared before it are discarded
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        # Ids have a lock of their own: the producer asks for one while the writer may hold the main lock.
        self._id_lock = threading.Lock()
        self._last_id = 0

    # -- connection --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """The open database, created on first use (under the lock)."""
        if self._db is None:
            self.media.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.folder / DATABASE, check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            self._db = db
            highest = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            with self._id_lock:
                self._last_id = max(self._last_id, highest)
        return self._db

    def open(self) -> None:
        """At start-up: reopen what a previous run stored (if anything), dropping half-written files, closing the
        events it left open and applying retention. Until then the store shows no events."""
        if not (self.folder / DATABASE).exists():
            return
        with self._lock:
            for leftover in self.media.glob(TEMPORARY_PATTERN):
                leftover.unlink(missing_ok=True)
            db = self._connect()
            closed = db.execute("UPDATE events SET end_ts = last_seen_ts WHERE end_ts IS NULL").rowcount
            if closed:
                logger.warning("closed %d event(s) the previous run left open", closed)
            self._prune()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def new_id(self) -> int:
        """An id never given before in this folder: increasing, above the time in ms (a clear never reuses one)."""
        with self._id_lock:
            self._last_id = max(self._last_id + 1, int(self.clock() * 1000))
            return self._last_id

    # -- writing -----------------------------------------------------------------------------
    def save(self, record: EventRecord, snapshot: bytes | None, crop: bytes | None, generation: int) -> bool:
        """Insert or update an event, replacing its pictures when given; False when a clear came after it."""
        with self._lock:
            if generation != self.generation:
                return False
            db = self._connect()
            pictures = {"snapshot": snapshot, "crop": crop}
            if self.space is not None:  # InsufficientStorage: the writer counts the event as not saved
                self.space.require(sum(len(data) for data in pictures.values() if data) + ROW_BYTES)
            sizes = self.write_pictures(record.id, pictures)
            values = [getattr(record, name) for name in COLUMNS]
            values[COLUMNS.index("box")] = json.dumps([round(v, 1) for v in record.box])
            db.execute(
                f"INSERT INTO events ({', '.join(COLUMNS)}, updated_ts) VALUES ({', '.join('?' * len(COLUMNS))}, ?) "
                f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in COLUMNS[1:])}, "
                "updated_ts = excluded.updated_ts",
                [*values, self.clock()],
            )
            for kind, size in sizes.items():
                db.execute(f"UPDATE events SET {kind}_bytes = ? WHERE id = ?", (size, record.id))
            self._prune()
            return True

    def write_pictures(self, event_id: int, pictures: dict[str, bytes | None]) -> dict[str, int]:
        """Write an event's JPEGs (each whole or not at all); return their sizes. Every event file is written here."""
        sizes = {}
        for kind, data in pictures.items():
            if data is None:
                continue
            write_bytes(self.picture_path(event_id, kind), data)
            sizes[kind] = len(data)
        return sizes

    def picture_path(self, event_id: int, kind: str) -> Path:
        return self.media / f"{event_id}-{kind}.jpg"

    def _prune(self) -> int:
        """Delete the oldest closed events past any retention bound, files included; return how many."""
        db, bound = self._db, self.retention
        doomed: list[int] = []
        if bound.max_age_s:
            cutoff = self.clock() - bound.max_age_s
            doomed += [r[0] for r in db.execute("SELECT id FROM events WHERE end_ts IS NOT NULL AND end_ts < ?",
                                                (cutoff,))]
        closed = db.execute("SELECT id, snapshot_bytes + crop_bytes FROM events WHERE end_ts IS NOT NULL "
                            "ORDER BY id").fetchall()
        count, total = self._count_and_bytes()
        for event_id, size in closed:
            if event_id in doomed:
                count, total = count - 1, total - size
                continue
            too_many = bound.max_count and count > bound.max_count
            too_big = bound.max_bytes and total > bound.max_bytes
            if not (too_many or too_big):
                break
            doomed.append(event_id)
            count, total = count - 1, total - size
        if doomed:
            db.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in doomed])
            for event_id in doomed:
                for kind in KINDS:
                    self.picture_path(event_id, kind).unlink(missing_ok=True)
            logger.info("retention deleted %d event(s)", len(doomed))
        return len(doomed)

    def _count_and_bytes(self) -> tuple[int, int]:
        count, media = self._db.execute("SELECT COUNT(*), COALESCE(SUM(snapshot_bytes + crop_bytes), 0) FROM events"
                                        ).fetchone()
        return count, media

    def clear(self) -> int:
        """Delete every event and its files (and the folder); return how many there were."""
        with self._lock:
            self.generation += 1
            count = self._count_and_bytes()[0] if self._db is not None else 0
            self.close()
            shutil.rmtree(self.folder, ignore_errors=True)
        logger.info("cleared %d event(s)", count)
        return count

    # -- reading -----------------------------------------------------------------------------
    def _read(self, sql: str, params=()) -> list[sqlite3.Row]:
        with self._lock:
            if self._db is None:
                return []
            return self._db.execute(sql, params).fetchall()

    def query(self, query: EventQuery) -> list[dict]:
        """Events matching the query, newest first."""
        where, params = [], []
        if query.classes is not None:
            where.append(f"class_name IN ({', '.join('?' * len(query.classes))})")
            params += query.classes
        for clause, value in (("start_ts >= ?", query.since), ("start_ts <= ?", query.until),
                              ("id < ?", query.before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "")
        return [describe(r) for r in self._read(sql + " ORDER BY id DESC LIMIT ?", [*params, query.limit])]

    def get(self, event_id: int) -> dict | None:
        rows = self._read("SELECT * FROM events WHERE id = ?", (event_id,))
        return describe(rows[0]) if rows else None

    def picture(self, event_id: int, kind: str) -> Path | None:
        """The path of an event's snapshot or crop, or None when there is no such event or picture."""
        if kind not in KINDS:
            raise ValueError(f"no picture kind {kind!r}")
        rows = self._read(f"SELECT {kind}_bytes FROM events WHERE id = ?", (event_id,))
        path = self.picture_path(event_id, kind)
        return path if rows and rows[0][0] and path.exists() else None

    def classes(self) -> list[str]:
        return [r[0] for r in self._read("SELECT DISTINCT class_name FROM events ORDER BY class_name")]

    def summary(self) -> dict:
        """How many events are stored, and the bytes they take (pictures and database)."""
        with self._lock:
            if self._db is None:
                return {"count": 0, "bytes": 0}
            count, media = self._count_and_bytes()
        return {"count": count, "bytes": media + self._database_bytes()}

    def _database_bytes(self) -> int:
        total = 0
        for path in self.folder.glob(DATABASE + "*"):  # with its -wal and -shm files
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # cleared meanwhile
                pass
        return total
