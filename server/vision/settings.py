"""Stream settings a viewer may change while watching, and their validation."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from server.vision.detector import default_threads
from server.vision.engines import AUTO, ENGINES
from server.vision.motion import AUTO as DETECT_AUTO

IMGSZ_CHOICES = (320, 416, 512, 640)
PRECISIONS = ("fp32", "int8", "fp16")
DETECT_EVERY_RANGE = (1, 10)
# Frames between keyframes wait for the next one and get interpolated boxes: for files only (a live source
# would show its frames detect_every - 1 intervals late), for every source, or never (the tracker moves them).
INTERPOLATE_CHOICES = ("files", "always", "never")
JPEG_QUALITY_RANGE = (30, 95)
OUTPUT_WIDTH_RANGE = (160, 1920)
FRACTION_RANGE = (0, 1)  # conf, iou and min_agreement: greater than 0, at most 1
FRACTIONS = ("conf", "iou", "min_agreement")


class SettingsError(ValueError):
    """A settings change that cannot be applied; its message is shown to the user."""


def max_threads() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    """What the producer reads before every frame."""

    conf: float = 0.25
    iou: float = 0.7
    imgsz: int = 640
    realtime: bool = True
    loop: bool = True
    engine: str = AUTO  # or one of ENGINES, with precision and threads as set
    precision: str = "fp32"
    detect_every: int | str = 1  # or "auto": motion decides (server/vision/motion.py)
    interpolate: str = INTERPOLATE_CHOICES[0]
    classes: tuple[int, ...] | None = None
    threads: int = default_threads()  # ONNX Runtime intra-op threads (HTTP workers: Config.http_threads)
    jpeg_quality: int = 80
    output_width: int | None = None
    min_agreement: float = 0.90

    def as_dict(self) -> dict:
        data = asdict(self)
        data["classes"] = list(self.classes) if self.classes is not None else None
        return data


def options_for(offered: dict, imgsz_choices: tuple[int, ...] = IMGSZ_CHOICES) -> dict:
    """Describe the allowed values, for the page to build its controls (engines: the precisions each offers).

    A range is [low, high], both allowed, except for the keys in "above_low", which must be greater than low.
    offered is what the engines offer (server.models.backends: the registry's to say).
    """
    return {
        **{name: list(FRACTION_RANGE) for name in FRACTIONS},
        "above_low": list(FRACTIONS),
        "imgsz": list(imgsz_choices),
        "engine": [AUTO, *offered],
        "engines": {engine: list(precisions) for engine, precisions in offered.items()},
        "precision": list(PRECISIONS),
        "detect_every": list(DETECT_EVERY_RANGE),
        "detect_every_auto": DETECT_AUTO,  # the one word detect_every also takes
        "interpolate": list(INTERPOLATE_CHOICES),
        "threads": [1, max_threads()],
        "jpeg_quality": list(JPEG_QUALITY_RANGE),
        "output_width": list(OUTPUT_WIDTH_RANGE),
    }


def _fraction(name: str, value) -> float:
    low, high = FRACTION_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise SettingsError(f"{name} must be a number greater than {low} and at most {high}, got {value!r}")
    return float(value)


def _boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{name} must be true or false, got {value!r}")
    return value


def _integer(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _detect_every(value) -> int | str:
    if value == DETECT_AUTO:
        return value
    low, high = DETECT_EVERY_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"detect_every must be a whole number from {low} to {high} or {DETECT_AUTO!r}, "
                            f"got {value!r}")
    return value


def _choice(name: str, value, choices) -> object:
    if isinstance(value, bool) or value not in choices:
        allowed = ", ".join(str(choice) for choice in choices)
        raise SettingsError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _classes(value, class_count: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in value
    ):
        raise SettingsError("classes must be null (all classes) or a list of class ids")
    unknown = [c for c in value if not 0 <= c < class_count]
    if unknown:
        raise SettingsError(f"classes {unknown} do not exist in the model ({class_count} classes)")
    return tuple(sorted(set(value)))


def _offered(settings: Settings, offered: dict, why_not: dict) -> Settings:
    """Refuse an engine x precision the model does not offer, saying why and what it does offer.

    With engine auto the precision setting waits, unused, for the user to pick an engine again.
    """
    if settings.engine == AUTO:
        return settings
    precisions = offered.get(settings.engine)
    if precisions is None:
        reason = f" ({why_not[settings.engine]})" if why_not.get(settings.engine) else ""
        raise SettingsError(f"engine {settings.engine} is not offered for this model{reason}; "
                            f"choose {' or '.join(offered)}")
    if settings.precision not in precisions:
        raise SettingsError(f"precision {settings.precision} is not offered with engine {settings.engine}; "
                            f"choose {' or '.join(precisions)}")
    return settings


def apply_changes(
    current: Settings, changes: dict, offered: dict, imgsz_choices=IMGSZ_CHOICES, class_count: int = 0,
    why_not: dict | None = None,
) -> Settings:
    """Return current with changes applied, or raise SettingsError naming the bad key or value.

    offered maps each engine the model can run on to its precisions (server.models.backends says which: without a
    model, every engine's own, PRECISIONS_BY_ENGINE); why_not says, per engine left out, why (shown in the error).
    Which engine runs is not decided here (server.models.policy).
    """
    if not isinstance(changes, dict):
        raise SettingsError("settings must be a JSON object")
    validators = {
        "conf": lambda v: _fraction("conf", v),
        "iou": lambda v: _fraction("iou", v),
        "min_agreement": lambda v: _fraction("min_agreement", v),
        "imgsz": lambda v: _choice("imgsz", v, imgsz_choices),
        "realtime": lambda v: _boolean("realtime", v),
        "loop": lambda v: _boolean("loop", v),
        "engine": lambda v: _choice("engine", v, (AUTO, *ENGINES)),
        "precision": lambda v: _choice("precision", v, PRECISIONS),
        "detect_every": _detect_every,
        "interpolate": lambda v: _choice("interpolate", v, INTERPOLATE_CHOICES),
        "classes": lambda v: _classes(v, class_count),
        "threads": lambda v: _integer("threads", v, 1, max_threads()),
        "jpeg_quality": lambda v: _integer("jpeg_quality", v, *JPEG_QUALITY_RANGE),
        "output_width": lambda v: None if v is None else _integer("output_width", v, *OUTPUT_WIDTH_RANGE),
    }
    unknown = sorted(set(changes) - set(validators))
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
    changed = replace(current, **{key: validators[key](value) for key, value in changes.items()})
    return _offered(changed, offered, why_not or {})
