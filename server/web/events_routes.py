"""HTTP routes of the events API: check the request, ask the event store, shape the answer."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from server.events.query import MAX_CSV_LIMIT, EventNotFound, EventQueryError, parse_event_id, parse_query
from server.events.recorder import EventRecorder
from server.web.routes import error

bp = Blueprint("events", __name__)

CSV_COLUMNS = ("id", "class", "class_id", "track_id", "source", "start", "end", "video_start_s", "video_end_s",
               "best_score", "x1", "y1", "x2", "y2", "frames", "snapshot_url", "crop_url")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def events() -> EventRecorder:
    return current_app.extensions["events"]


def _event_or_404(raw_id: str) -> dict:
    event = events().store.get(parse_event_id(raw_id))
    if event is None:
        raise EventNotFound(f"no event {raw_id}: it was deleted (retention, DELETE /api/events or reset) or never was")
    return event


@bp.get("/api/events")
def list_events():
    query = parse_query(request.args)
    found = events().store.query(query)
    following = found[-1]["id"] if len(found) == query.limit else None
    return jsonify({"events": found, "next": following, "classes": events().store.classes(),
                    "status": events().status()})


@bp.get("/api/events.csv")
def events_csv():
    query = parse_query(request.args, cap=MAX_CSV_LIMIT, default_limit=MAX_CSV_LIMIT)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for event in events().store.query(query):
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
    return jsonify(_event_or_404(raw_id))


@bp.get("/api/events/<raw_id>/snapshot.jpg")
def snapshot(raw_id: str):
    return _picture(raw_id, "snapshot")


@bp.get("/api/events/<raw_id>/crop.jpg")
def crop(raw_id: str):
    return _picture(raw_id, "crop")


def _picture(raw_id: str, kind: str):
    event = _event_or_404(raw_id)
    path = events().store.picture(event["id"], kind)
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
    return jsonify({"deleted": events().clear()})


@bp.errorhandler(EventQueryError)
def bad_query(exc):
    return error(str(exc), 400)


@bp.errorhandler(EventNotFound)
def not_found(exc):
    return error(str(exc), 404)
