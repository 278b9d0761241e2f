"""HTTP routes of the events API: check the request, ask the event store, shape the answer."""

from __future__ import annotations

import csv
import io
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request, send_file

from server.events.query import MAX_CSV_LIMIT, EventNotFound, EventQueryError, parse_event_id, parse_query
from server.events.store import KINDS
from server.web.routes import error, service

bp = Blueprint("events", __name__)

CSV_COLUMNS = ("id", "class", "class_id", "track_id", "source", "start", "end", "video_start_s", "video_end_s",
               "best_score", "x1", "y1", "x2", "y2", "frames", "snapshot_url", "crop_url")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def picture_url(event_id, kind: str) -> str:
    """The path of an event's snapshot or crop (the routes below answer it)."""
    return f"/api/events/{quote(str(event_id), safe='')}/{kind}.jpg"


def event_links(base_url: str):
    """What the outputs link each event to: the absolute URLs of its pictures, from the server's public base."""
    return lambda event_id: {f"{kind}_url": base_url + picture_url(event_id, kind) for kind in KINDS}


def shown(event: dict) -> dict:
    """The event as the API shows it: each picture it has as a URL that changes when the picture does."""
    pictures = event["pictures"]
    urls = {f"{kind}_url": f"{picture_url(event['id'], kind)}?v={pictures[kind]}" if kind in pictures else None
            for kind in KINDS}
    return {**{key: value for key, value in event.items() if key != "pictures"}, **urls}


def _event_or_404(raw_id: str) -> dict:
    event = service().event(parse_event_id(raw_id))
    if event is None:
        raise EventNotFound(f"no event {raw_id}: it was deleted (retention, DELETE /api/events or reset) or never was")
    return event


@bp.get("/api/events")
def list_events():
    query = parse_query(request.args)
    found = service().find_events(query)
    following = found[-1]["id"] if len(found) == query.limit else None
    return jsonify({"events": [shown(event) for event in found], "next": following, **service().event_overview()})


@bp.get("/api/events.csv")
def events_csv():
    query = parse_query(request.args, cap=MAX_CSV_LIMIT, default_limit=MAX_CSV_LIMIT)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for event in map(shown, service().find_events(query)):
        row = {**event, **dict(zip(("x1", "y1", "x2", "y2"), event["box"]))}
        writer.writerow([_cell(row[column]) for column in CSV_COLUMNS])
    response = Response(buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="edge-detect-events.csv"'
    return response


def _cell(value) -> object:
    """A CSV cell a spreadsheet shows as text: a source name such as '=cmd()' must not run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return "" if value is None else value


@bp.get("/api/events/<raw_id>")
def get_event(raw_id: str):
    return jsonify(shown(_event_or_404(raw_id)))


@bp.get("/api/events/<raw_id>/snapshot.jpg")
def snapshot(raw_id: str):
    return _picture(raw_id, "snapshot")


@bp.get("/api/events/<raw_id>/crop.jpg")
def crop(raw_id: str):
    return _picture(raw_id, "crop")


def _picture(raw_id: str, kind: str):
    event = _event_or_404(raw_id)
    path = service().event_picture(event["id"], kind)
    if path is None:
        raise EventNotFound(f"event {event['id']} has no {kind} yet; try again in a moment")
    try:
        data = path.read_bytes()  # read now: a clear may delete the file before it would be streamed
    except FileNotFoundError:
        raise EventNotFound(f"event {event['id']} was just deleted") from None
    response = send_file(io.BytesIO(data), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=3600"  # the URL changes when the picture does
    return response


@bp.delete("/api/events")
def delete_events():
    return jsonify({"deleted": service().clear_events()})


@bp.errorhandler(EventQueryError)
def bad_query(exc):
    return error(str(exc), 400)


@bp.errorhandler(EventNotFound)
def not_found(exc):
    return error(str(exc), 404)
