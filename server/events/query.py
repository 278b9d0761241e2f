"""Read what a client asks of the events API: ids, filters, paging; anything odd is an EventQueryError (HTTP 400)."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from server.events.settings import MAX_CLASS_NAME_CHARS
from server.events.store import EventQuery

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CSV_LIMIT = 10000
MAX_CLASSES = 50
MAX_ID = 2**63 - 1
FILTERS = ("class", "since", "until", "limit", "before")


class EventQueryError(ValueError):
    """A malformed id or query value; the message says what is accepted."""


class EventNotFound(LookupError):
    """No such event, or no such picture of it (HTTP 404)."""


def parse_event_id(text: str) -> int:
    """An event id from a URL: a positive whole number."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 0 < int(text) <= MAX_ID:
        raise EventQueryError(f"event ids are positive whole numbers, got {text[:40]!r}")
    return int(text)


def parse_time(name: str, text: str) -> float:
    """Seconds since the epoch, or an ISO 8601 date/time (UTC when it names no zone)."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise EventQueryError(
                f"{name} must be seconds since 1970 or an ISO 8601 time such as 2026-12-02T14:02:00Z, "
                f"got {text[:40]!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if not math.isfinite(value) or value < 0:
        raise EventQueryError(f"{name} must be a time after 1970, got {text[:40]!r}")
    return value


def parse_classes(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise EventQueryError("class must name one or more classes, comma-separated")
    if len(names) > MAX_CLASSES:
        raise EventQueryError(f"class names at most {MAX_CLASSES} classes")
    for name in names:
        if len(name) > MAX_CLASS_NAME_CHARS or not name.isprintable():
            raise EventQueryError(f"class {name[:40]!r} is not a class name")
    return names


def parse_limit(text: str, cap: int) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 6 or not 1 <= int(text) <= cap:
        raise EventQueryError(f"limit must be a whole number from 1 to {cap}, got {text[:40]!r}")
    return int(text)


def parse_query(args, cap: int = MAX_LIMIT, default_limit: int = DEFAULT_LIMIT) -> EventQuery:
    """The events a list (or CSV) request asks for, from its query string."""
    unknown = sorted(set(args) - set(FILTERS))
    if unknown:
        raise EventQueryError(f"unknown parameter(s) {', '.join(u[:40] for u in unknown)}; "
                              f"use {', '.join(FILTERS)}")
    since = parse_time("since", args["since"]) if "since" in args else None
    until = parse_time("until", args["until"]) if "until" in args else None
    if since is not None and until is not None and until < since:
        raise EventQueryError("until must not be before since")
    return EventQuery(
        classes=parse_classes(args["class"]) if "class" in args else None,
        since=since,
        until=until,
        before=parse_event_id(args["before"]) if "before" in args else None,
        limit=parse_limit(args["limit"], cap) if "limit" in args else min(default_limit, cap),
    )
