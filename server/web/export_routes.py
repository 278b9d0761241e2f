"""HTTP routes of the export: start, watch, cancel, download. Input checks only; the service does the work."""

from __future__ import annotations

from flask import Blueprint, jsonify, send_file

from server.web.routes import service

bp = Blueprint("export", __name__)


FILES = ("video", "detections")


def shown(export: dict) -> dict:
    """The export's state as the API shows it: each finished file with the URL that downloads it (routes below)."""
    return {**export, **{kind: {**export[kind], "url": f"/api/export/{kind}"} for kind in FILES if export[kind]}}


@bp.post("/api/export")
def start_export():
    return jsonify({"export": shown(service().start_export())}), 202


@bp.get("/api/export")
def export_status():
    return jsonify({"export": shown(service().export_status())})


@bp.delete("/api/export")
@bp.post("/api/export/cancel")
def cancel_export():
    return jsonify({"export": shown(service().stop_export())})


@bp.get("/api/export/video")
def export_video_file():
    return _download("video", "video/webm")


@bp.get("/api/export/detections")
def export_detections_file():
    return _download("detections", "text/csv")


def _download(kind: str, mimetype: str):
    found = service().export_file(kind)
    if found is None:
        return jsonify({"error": "no finished export: POST /api/export first and wait until it is done"}), 404
    path, name = found
    response = send_file(path, mimetype=mimetype, as_attachment=True, download_name=name, conditional=True)
    response.headers["Cache-Control"] = "no-store"
    return response
