"""What makes an event, and how long events are kept: validated once, from the config's flags."""

from __future__ import annotations

from dataclasses import dataclass

from server.config import MB, Config

MIN_FRAMES_RANGE = (1, 1000)
CLOSE_AFTER_RANGE_S = (0.1, 3600.0)
MAX_CLASS_NAME_CHARS = 100


class EventSettingsError(ValueError):
    """A setting that cannot be used; its message names the flag and what it accepts."""


@dataclass(frozen=True)
class EventSettings:
    """When an event opens and closes.

    An event opens once a tracked object of one of `classes` (None: every class) has been seen on at least
    `min_frames` frames with a score of at least `min_score`, and closes once it has been gone `close_after_s`.
    """

    # The defaults are the flags' (server.config), said once there.
    enabled: bool = not Config.no_events
    classes: tuple[str, ...] | None = None
    min_score: float = Config.event_min_score
    min_frames: int = Config.event_min_frames
    close_after_s: float = Config.event_close_after

    def class_ids(self, class_names: list[str]) -> tuple[frozenset[int] | None, list[str]]:
        """The model's class ids these settings choose (None: all), and the chosen names the model lacks.

        A class may be named or given by its id.
        """
        if self.classes is None:
            return None, []
        chosen, unknown = set(), []
        for name in self.classes:
            if name in class_names:
                chosen.add(class_names.index(name))
            elif name.isdigit() and int(name) < len(class_names):
                chosen.add(int(name))
            else:
                unknown.append(name)
        return frozenset(chosen), unknown

    def as_dict(self) -> dict:
        return {
            "enabled": self.enabled,
            "classes": list(self.classes) if self.classes is not None else None,
            "min_score": self.min_score,
            "min_frames": self.min_frames,
            "close_after_s": self.close_after_s,
        }


@dataclass(frozen=True)
class Retention:
    """How many events are kept: the oldest closed ones go first once any bound is passed (0: no bound)."""

    max_count: int = Config.events_keep
    max_age_s: float = Config.events_keep_days * 86400.0
    max_bytes: int = int(Config.events_keep_mb * MB)


def parse_classes(text: str) -> tuple[str, ...] | None:
    """`--event-classes circle,square` (names or ids); empty: every class."""
    names = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    for name in names:
        if len(name) > MAX_CLASS_NAME_CHARS or not name.isprintable():
            raise EventSettingsError(f"--event-classes: {name[:40]!r} is not a class name")
    return names or None


def _number(flag: str, value: float, low: float, high: float) -> float:
    if not low <= value <= high:
        raise EventSettingsError(f"{flag} must be from {low:g} to {high:g}, got {value!r}")
    return value


def settings_from_config(config) -> EventSettings:
    """Build and check the event settings from the config's --event-* flags."""
    if not 0 < config.event_min_score <= 1:
        raise EventSettingsError(
            f"--event-min-score must be greater than 0 and at most 1, got {config.event_min_score!r}")
    return EventSettings(
        enabled=not config.no_events,
        classes=parse_classes(config.event_classes),
        min_score=float(config.event_min_score),
        min_frames=int(_number("--event-min-frames", config.event_min_frames, *MIN_FRAMES_RANGE)),
        close_after_s=float(_number("--event-close-after", config.event_close_after, *CLOSE_AFTER_RANGE_S)),
    )


def retention_from_config(config) -> Retention:
    """Build and check the retention from the config's --events-keep-* flags."""
    for flag, value in (("--events-keep", config.events_keep), ("--events-keep-days", config.events_keep_days),
                        ("--events-keep-mb", config.events_keep_mb)):
        if value < 0:
            raise EventSettingsError(f"{flag} must be 0 (no bound) or more, got {value!r}")
    return Retention(
        max_count=int(config.events_keep),
        max_age_s=float(config.events_keep_days) * 86400.0,
        max_bytes=int(config.events_keep_mb * 1024 * 1024),
    )
