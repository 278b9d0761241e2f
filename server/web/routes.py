"""HTTP routes: check the request, call the service, shape the JSON. No image code here."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from server.storage import InsufficientStorage
from server.vision import mjpeg
from server.vision.settings import SettingsError
from server.vision.sources.spec import SourceRejected
from server.vision.trace import TraceRequestInvalid, parse_trace_request
from server.web.lan import lan_urls
from server.web.service import Busy, DetectionService, TooManyViewers
from server.web.uploads import UploadRejected

logger = logging.getLogger(__name__)

bp = Blueprint("main", __name__)
MAX_ERROR_CHARS = 300


def service() -> DetectionService:
    return current_app.extensions["detection"]


def error(message: str, status: int):
    # Messages may quote the client's input; never echo a megabyte of it back.
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "\u2026"
    return jsonify({"error": message}), status


def _uploaded_file(limit: int) -> tuple[Path, str]:
    """Return the uploaded file's temporary path and original name, enforcing the size limit."""
    request.max_content_length = limit
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise UploadRejected("send the file as multipart form field 'file'")
    upload.stream.flush()
    return Path(upload.stream.name), upload.filename


@bp.get("/")
def index():
    return render_template("index.html")


@bp.post("/upload/video")
def upload_video():
    service().refuse_while_busy("upload a video")
    path, filename = _uploaded_file(current_app.config["MAX_VIDEO_BYTES"])
    return jsonify({"video": service().add_video(path, filename)}), 201


@bp.post("/upload/model")
def upload_model():
    service().refuse_while_busy("upload a model")
    path, filename = _uploaded_file(current_app.config["MAX_MODEL_BYTES"])
    return jsonify({"model": service().add_model(path, filename)}), 201


@bp.get("/api/status")
def status():
    # The addresses to open the page at: the host it was told to listen on, the port this request reached.
    port = int(request.environ.get("SERVER_PORT") or 0)
    return jsonify({**service().status(), "lan_urls": lan_urls(service().config.host, port)})


@bp.post("/api/settings")
def settings():
    try:
        changes = request.get_json(silent=True)
    except RecursionError:  # deeply nested JSON: Python's parser gives up, that is the client's fault
        changes = None
    if changes is None:
        raise SettingsError("send the settings as a JSON object")
    return jsonify(service().update_settings(changes))


@bp.post("/stream/start")
def start():
    service().start()
    return jsonify({"streaming": True})


@bp.post("/stream/stop")
def stop():
    service().stop()
    return jsonify({"streaming": False})


@bp.get("/video_feed")
def video_feed():
    frames = service().viewer_frames()
    response = Response(frames, mimetype=mjpeg.MIMETYPE)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.post("/source")
def select_source():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise SourceRejected('send JSON {"url": "..."}: an rtsp://, http(s):// URL or /dev/videoN')
    return jsonify({"source": service().select_source(body["url"])})


@bp.get("/api/trace")
def trace():
    frames, onnx_profile = parse_trace_request(request.args.get("frames"), request.args.get("onnx"))
    response = jsonify(service().trace(frames, onnx_profile))
    response.headers["Content-Disposition"] = 'attachment; filename="edge-detect-trace.json"'
    return response


@bp.post("/reset")
def reset():
    return jsonify({"deleted": service().reset()})


@bp.app_errorhandler(UploadRejected)
@bp.app_errorhandler(SettingsError)
@bp.app_errorhandler(SourceRejected)
@bp.app_errorhandler(TraceRequestInvalid)
def bad_request(exc):
    return error(str(exc), 400)


@bp.app_errorhandler(Busy)
def conflict(exc):
    return error(str(exc), 409)


@bp.app_errorhandler(TooManyViewers)
def too_many_viewers(exc):
    return error(str(exc), 503)


@bp.app_errorhandler(InsufficientStorage)
def insufficient_storage(exc):
    return error(str(exc), 507)


@bp.app_errorhandler(RequestEntityTooLarge)
def too_large(exc):
    limit = request.max_content_length or 0
    return error(f"the file is too large: the limit is {limit // (1024 * 1024)} MB", 413)


@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return error(exc.description or exc.name, exc.code or 500)
