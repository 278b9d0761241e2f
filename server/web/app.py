"""The Flask app factory: the upload store, the detection service and the routes, wired together."""

from __future__ import annotations

import os

from flask import Flask, Request, current_app
from werkzeug.exceptions import BadRequest

from server.config import REPO_ROOT, Config
from server.events.recorder import EventRecorder
from server.events.settings import retention_from_config, settings_from_config
from server.events.store import EventStore
from server.jobs import JobBoard
from server.layout import StorageLayout
from server.models.current import CurrentModel
from server.models.trial_run import TrialBudget
from server.models.tuning.job import EngineTiming
from server.storage import is_disk_full
from server.vision.export_job import Exports
from server.web import auth, guards
from server.outputs import build_outputs
from server.outputs.messages import public_base_url
from server.web.events_routes import bp as events_bp
from server.web.events_routes import event_links
from server.web.export_routes import bp as export_bp
from server.web.lan import lan_urls
from server.web.lifecycle import server_lifecycle
from server.web.routes import bp
from server.web.selection import SourceSelection
from server.web.service import Collaborators, DetectionService
from server.web.streaming import StreamControl
from server.web.uploads import UploadStore, upload_suffix


class TooManyFiles(BadRequest):
    """A second file part (not a ValueError: Werkzeug's form parser would swallow that)."""

    description = "send exactly one file per request, as multipart form field 'file'"


class UploadRequest(Request):
    """Write the one uploaded file straight into the uploads folder under a hidden temporary name.

    The file is opened only when the disk has room for the body (507 otherwise; waitress checked it before
    spooling, this covers every other server and chunked bodies), and it is removed when writing it fails: a
    full disk (ENOSPC) is a 507 with nothing left behind.
    """

    _incoming = None

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        # Refused as the second part starts: 999 parts never become 999 open temporary files.
        self._file_parts = getattr(self, "_file_parts", 0) + 1
        if self._file_parts > 1:
            raise TooManyFiles()
        store = current_app.extensions["uploads"]
        store.space.require(total_content_length or 0)
        self._incoming = store.incoming_file(upload_suffix(filename))
        return self._incoming

    def _load_form_data(self):
        try:
            super()._load_form_data()
        except BaseException as exc:
            written = 0
            if self._incoming is not None and not self._incoming.closed:
                written = os.fstat(self._incoming.fileno()).st_size  # what a chunked body reached
                self._incoming.close()  # a NamedTemporaryFile: closing it deletes it
            if is_disk_full(exc):
                raise current_app.extensions["uploads"].space.full(self.content_length or written) from None
            raise


def build_collaborators(config: Config, layout: StorageLayout) -> Collaborators:
    """Build what the detection service routes to: uploads, jobs, the engine timing, the current model, sources,
    the stream, the export, events and outputs. Nothing here reads what a previous run left: the start steps do."""
    store = UploadStore(layout, trial=TrialBudget(config.model_check_mb, config.model_check_timeout),
                        reserve_bytes=config.disk_reserve_bytes)
    jobs = JobBoard()
    timing = EngineTiming(jobs, [r for r in config.int8_recipes.split(",") if r], space=store.space)
    # Snapshot URLs in webhook and MQTT messages: --public-url, else this server's first LAN address.
    base_url = public_base_url(config.public_url, lan_urls(config.host, config.port))
    outputs = build_outputs(config, event_links(base_url))
    events = EventRecorder(EventStore(layout.events, retention_from_config(config), space=store.space),
                           settings_from_config(config), outputs=outputs)
    return Collaborators(store=store, jobs=jobs, timing=timing, model=CurrentModel(timing, config.engine),
                         sources=SourceSelection(config), stream=StreamControl(config),
                         exports=Exports(layout.export, jobs, store.space), events=events, outputs=outputs)


def create_app(config: Config | None = None, start: bool = True) -> Flask:
    """Build the app with its upload store and detection service; start it unless start is False (run.py starts
    and stops it itself, see server.web.lifecycle)."""
    config = config or Config()
    app = Flask("server", template_folder=str(REPO_ROOT / "templates"), static_folder=str(REPO_ROOT / "static"))
    app.request_class = UploadRequest
    app.config.update(
        MAX_CONTENT_LENGTH=max(config.max_video_bytes, config.max_model_bytes),
        MAX_VIDEO_BYTES=config.max_video_bytes,
        MAX_MODEL_BYTES=config.max_model_bytes,
        MAX_FORM_MEMORY_SIZE=1024 * 1024,  # form fields are small; files go to disk via UploadRequest
    )
    layout = StorageLayout(config.uploads)
    parts = build_collaborators(config, layout)
    service = DetectionService(config, parts)
    app.extensions["uploads"] = parts.store  # UploadRequest writes an upload in flight into it
    app.extensions["detection"] = service
    app.extensions["lifecycle"] = server_lifecycle(layout, parts, service)
    app.register_blueprint(bp)
    app.register_blueprint(export_bp)
    app.register_blueprint(events_bp)
    guards.install(app, config.allowed_hosts)
    auth.install(app, config)
    if start:
        app.extensions["lifecycle"].start()
    return app
