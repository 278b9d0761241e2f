"""The server's start and stop: two plain ordered lists of named steps, each logged as it runs.

Like Frigate's FrigateApp.start()/stop(): the app factory (server.web.app.create_app) only builds the
collaborators, which touch nothing on disk but the uploads folder they make; what a start does with the files a
previous run left (cleaning, re-checking, reopening) runs here, in order, where the log shows it:

    start 1/5: recover leftovers: temporary files of an interrupted run
    start 2/5: reopen the events: close what the last run left open, apply retention
    start 3/5: take back the last export (or remove its partial files)
    start 4/5: load the stored video and model (the model's trial run takes up to 60 s)
    start 5/5: start the outputs: they connect in the background
    ...
    stop 1/3: the stream, then what it started: the event writer, the engine timing
    stop 2/3: an export
    stop 3/3: the outputs: what is pending, then "offline"

run.py builds the app with create_app(config, start=False), runs start() before serving and stop() once serving
ends; create_app(config) starts the app it built too, for the tests and tools that want a ready one. A step is
added to server_lifecycle's lists where its order says (cameras: started after the model is loaded, stopped first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.layout import StorageLayout
from server.web.recovery import clean_leftovers
from server.web.service import Collaborators, DetectionService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One thing a start or a stop does: what the log calls it, and the call that does it."""

    name: str
    run: Callable[[], object]


class Lifecycle:
    """Run the start steps in order (a failure stops the start), and the stop steps in order (each one runs even
    when an earlier one failed: the outputs must still send their last messages)."""

    def __init__(self, start_steps: list[Step], stop_steps: list[Step]):
        self.start_steps = start_steps
        self.stop_steps = stop_steps

    def start(self) -> None:
        for number, step in enumerate(self.start_steps, 1):
            self._run("start", number, len(self.start_steps), step)

    def stop(self) -> None:
        for number, step in enumerate(self.stop_steps, 1):
            try:
                self._run("stop", number, len(self.stop_steps), step)
            except Exception:  # logged; the next component still stops
                logger.exception("stop %d/%d failed: %s", number, len(self.stop_steps), step.name)

    @staticmethod
    def _run(kind: str, number: int, count: int, step: Step) -> None:
        logger.info("%s %d/%d: %s", kind, number, count, step.name)
        began = time.monotonic()
        step.run()
        logger.debug("%s %d/%d took %.2f s", kind, number, count, time.monotonic() - began)


def server_lifecycle(layout: StorageLayout, parts: Collaborators, service: DetectionService) -> Lifecycle:
    """The server's start and stop steps, in order."""
    trial = parts.store.trial
    start = [
        Step("recover leftovers: temporary files of an interrupted run", lambda: clean_leftovers(layout.folders())),
        Step("reopen the events: close what the last run left open, apply retention", parts.events.store.open),
        Step("take back the last export (or remove its partial files)", parts.exports.readopt),
        Step(f"load the stored video and model (the model's trial run takes up to {trial.timeout_s:g} s)",
             service.restore),
        Step("start the outputs: they connect in the background", parts.outputs.start),
    ]
    # The order the code always had: the events are saved right after the stream's end closed them, before the
    # waits that can be long (the engine timing's step, up to 10 s; an export's frame, up to 30 s), so a stop
    # cut short (systemd's timeout, a second Ctrl-C) loses only work that is redone or cleaned at the next start.
    # The outputs go last: they carry the final closes and "nothing tracked", then say "offline".
    stop = [
        Step("the stream, then what it started: the event writer, the engine timing", service.stop),
        Step("an export", service.stop_export),
        Step("the outputs: what is pending, then \"offline\"", parts.outputs.stop),
    ]
    return Lifecycle(start, stop)
