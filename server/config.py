"""One configuration object, filled from command-line flags with environment-variable fallbacks."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ENV_PREFIX = "EDGE_"
REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
# The engine setting's names, as data: the base imports nothing above it. They are server.vision.engines' AUTO and
# ENGINES (tests/test_run.py checks they agree), so --engine is refused at start-up, not at the first frame.
ENGINE_CHOICES = ("auto", "onnxruntime", "ncnn")


@dataclass
class Config:
    """Everything the server can be told at start-up."""

    host: str = field(default="0.0.0.0", metadata={"help": "address to listen on"})
    port: int = field(default=5000, metadata={"help": "port to listen on (0 picks a free one)"})
    uploads: Path = field(
        default=REPO_ROOT / "uploads", metadata={"help": "folder for uploads and derived models"}
    )
    http_threads: int = field(
        default=32, metadata={"help": "HTTP worker threads (each open stream viewer holds one)", "flag": "threads"}
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    max_video_mb: int = field(default=2048, metadata={"help": "largest video upload in MB"})
    max_model_mb: int = field(default=512, metadata={"help": "largest weights upload in MB"})
    disk_reserve_mb: int = field(
        default=256,
        metadata={"help": "MB of free space every write (upload, conversion, int8, export) leaves on the uploads "
                  "disk; a write that would eat into it is refused with 507"},
    )
    convert_timeout: float = field(
        default=600.0, metadata={"help": "seconds a .pt to ONNX conversion may take"}
    )
    model_check_mb: int = field(
        default=2048, metadata={"help": "memory (address space, MB) an uploaded model's trial run may take"}
    )
    model_check_timeout: float = field(
        default=60.0, metadata={"help": "seconds an uploaded model's trial run may take"}
    )
    engine: str = field(
        default=ENGINE_CHOICES[0],
        metadata={"help": f"the engine setting at start-up: {ENGINE_CHOICES[0]} (timed on this device once per "
                          f"model) or {' or '.join(ENGINE_CHOICES[1:])}", "choices": ENGINE_CHOICES},
    )
    int8_recipes: str = field(
        default="", metadata={"help": "comma-separated int8 recipes to try when tuning (empty: all)"}
    )
    camera: str = field(
        default="",
        metadata={"help": "command whose stdout is an MJPEG stream, selected as the live source at start-up "
                  "(e.g. 'rpicam-vid -t 0 --codec mjpeg -o -'); never settable from the web"},
    )
    source_timeout: float = field(
        default=5.0, metadata={"help": "seconds a live source may take to open or stay silent before it is reopened"}
    )
    source_backoff_max: float = field(
        default=4.0, metadata={"help": "longest wait in seconds between reconnect attempts to a live source"}
    )
    viewer_max_fps: float = field(
        default=30.0, metadata={"help": "frames per second sent to each stream viewer at most (0: no cap)"}
    )
    dev: bool = field(default=False, metadata={"help": "use Flask's development server"})
    demo: bool = field(
        default=False, metadata={"help": "start with the built-in demo video and model streaming"}
    )
    password: str = field(
        default="",
        metadata={
            "help": "require this password (login page; HTTP Basic for scripts) instead of the token; "
            "prefer the env variable, flags show in `ps`",
            "secret": True,
        },
    )
    no_auth: bool = field(
        default=False, metadata={"help": "turn access control off (anyone who reaches the port can use it)"}
    )
    allowed_hosts: str = field(
        default="",
        metadata={"help": "extra comma-separated Host names to answer to (.example.lan: any name under it)"},
    )
    connection_limit: int = field(
        default=1000, metadata={"help": "most open HTTP connections (idle ones cost a socket, not a thread)"}
    )
    channel_timeout: float = field(
        default=30.0, metadata={"help": "seconds an idle or half-sent connection is kept open"}
    )
    send_timeout: float = field(
        default=30.0, metadata={"help": "seconds a viewer may take no data before it is disconnected"}
    )
    # Events (docs/events.md): these defaults are also server.events.settings' (EventSettings, Retention).
    no_events: bool = field(default=False, metadata={"help": "do not record events"})
    event_classes: str = field(
        default="", metadata={"help": "comma-separated class names (or ids) that make events (empty: every class)"}
    )
    event_min_score: float = field(
        default=0.6, metadata={"help": "score a sighting needs to count towards an event"}
    )
    event_min_frames: int = field(
        default=5, metadata={"help": "frames an object must be seen on before its event opens"}
    )
    event_close_after: float = field(
        default=2.0, metadata={"help": "seconds an object must be gone before its event closes"}
    )
    events_keep: int = field(
        default=500, metadata={"help": "events kept at most, oldest deleted first (0: no bound)"}
    )
    events_keep_days: float = field(
        default=14.0, metadata={"help": "days an event is kept at most (0: no bound)"}
    )
    events_keep_mb: float = field(
        default=200.0, metadata={"help": "MB of event pictures kept at most (0: no bound)"}
    )

    # Outputs (server/outputs, docs/mqtt.md): targets come from flags or the environment only, never from HTTP.
    webhook_url: str = field(
        default="",
        metadata={"help": "POST each event (JSON with its snapshot's URL) here; http(s) only, redirects not "
                  "followed", "secret": True},
    )
    webhook_timeout: float = field(default=5.0, metadata={"help": "seconds one webhook POST may take"})
    webhook_retries: int = field(
        default=3, metadata={"help": "webhook retries after a failed POST (each wait twice the last), then give up"}
    )
    webhook_snapshot: bool = field(
        default=False, metadata={"help": "also put the snapshot JPEG (base64) in the webhook's JSON"}
    )
    mqtt_url: str = field(
        default="",
        metadata={"help": "MQTT broker for events, counts and Home Assistant discovery: "
                  "mqtt://user:password@host:1883 (mqtts:// for TLS)", "secret": True},
    )
    mqtt_prefix: str = field(default="edge_detect", metadata={"help": "MQTT topic prefix"})
    mqtt_discovery: str = field(
        default="homeassistant", metadata={"help": "Home Assistant discovery prefix ('' turns discovery off)"}
    )
    public_url: str = field(
        default="",
        metadata={"help": "base URL others reach this server at, for snapshot links in webhooks and MQTT "
                  "(default: the first LAN address)"},
    )
    output_queue: int = field(
        default=100, metadata={"help": "events each output holds while its target is down; more are dropped"}
    )

    @property
    def max_video_bytes(self) -> int:
        return self.max_video_mb * MB

    @property
    def max_model_bytes(self) -> int:
        return self.max_model_mb * MB

    @property
    def disk_reserve_bytes(self) -> int:
        return self.disk_reserve_mb * MB


def _option_name(item) -> str:
    """The flag's name without dashes (a field may keep a shorter or older flag name in its metadata)."""
    return item.metadata.get("flag", item.name)


def _env_name(item) -> str:
    return ENV_PREFIX + _option_name(item).upper()


def _parse_bool(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


def _default_from_env(item, environ) -> object:
    raw = environ.get(_env_name(item))
    if raw is None:
        return item.default
    if item.type in ("bool", bool):
        return _parse_bool(raw)
    return _convert(item, raw)


def _convert(item, raw: str) -> object:
    converters = {"int": int, "float": float, "Path": Path, "str": str}
    return converters[item.type if isinstance(item.type, str) else item.type.__name__](raw)


def build_parser(environ=os.environ) -> argparse.ArgumentParser:
    """Return the argument parser; every flag falls back to an EDGE_* environment variable."""
    parser = argparse.ArgumentParser(description="Edge object-detection streaming server")
    for item in fields(Config):
        flag = "--" + _option_name(item).replace("_", "-")
        default = _default_from_env(item, environ)
        shown = ("set" if default else "none") if item.metadata.get("secret") else default
        help_text = f"{item.metadata['help']} (env {_env_name(item)}, default {shown})"
        if item.type in ("bool", bool):
            parser.add_argument(flag, dest=item.name, action="store_true", default=default, help=help_text)
        else:
            parser.add_argument(
                flag, dest=item.name, metavar=_option_name(item).upper(), default=default, help=help_text,
                type=lambda raw, item=item: _convert(item, raw), choices=item.metadata.get("choices"),
            )
    return parser


def config_from_args(argv: list[str] | None = None, environ=os.environ) -> Config:
    """Parse flags (with env fallbacks) into a Config."""
    parser = build_parser(environ)
    values = vars(parser.parse_args(argv))
    for item in fields(Config):  # argparse checks a flag's choices, not a default taken from the environment
        choices = item.metadata.get("choices")
        if choices and values[item.name] not in choices:
            parser.error(f"{_env_name(item)}={values[item.name]!r}: choose from {', '.join(choices)}")
    return Config(**values)
