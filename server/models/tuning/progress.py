"""An engine timing's progress and time left, from the work it has measured so far.

The steps of a run are far from equal: quantizing a recipe takes seconds, the shared timing rounds take as long as
every candidate's inference times the frames and rounds. So the time left is not elapsed x steps left / steps
done: each step left is estimated from the finished steps of its kind, and the timing rounds from the inference
time each candidate showed on the held-back frames. Progress is elapsed / (elapsed + left), so the page's bar and
its "about N s left" say the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from server.vision.turns import InferenceTurns

logger = logging.getLogger(__name__)

Progress = Callable[[str, float, str], None]
TIMING = "timing"  # the kind of the step whose cost comes from measured inference times
MIN_PROGRESS_FOR_LEFT = 0.05  # below this the estimate rests on too little


class TimingCancelled(Exception):
    """The engine timing was asked to stop (stream stopped, reset, a new upload); nothing was kept."""


class Steps:
    """The planned steps of a run (their kinds, in order): progress, "step i/n: ...", time left, cancellation."""

    def __init__(self, plan: list[str], on_progress: Progress | None, cancel: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, turns: InferenceTurns | None = None):
        self.plan = list(plan)
        self.on_progress, self.cancel, self.clock = on_progress, cancel, clock
        self.done = 0
        self.started = self._step_started = clock()
        self.spent: dict[str, list[float]] = {}  # seconds of each finished step, by kind
        self.inference_s: dict[str, float] = {}  # seconds one inference took, by candidate (agreement runs)
        self.timing_inferences = 0  # inferences per candidate in the timing rounds
        self.turns = turns or InferenceTurns()  # the run's inferences take turns at the CPU with a playing stream
        self._shown = 0.0  # the progress last reported: it never goes back

    @property
    def total(self) -> int:
        return len(self.plan)

    def check(self) -> None:
        """Raise TimingCancelled once cancellation was asked for."""
        if self.cancel is not None and self.cancel.is_set():
            raise TimingCancelled("the engine timing was cancelled")

    def add_before(self, kind: str, kinds: list[str]) -> None:
        """Plan more steps before the first step of kind (the other engines, once listed)."""
        at = self.plan.index(kind, self.done)
        self.plan[at:at] = kinds

    def finish(self) -> None:
        """The current step is done: its time counts for the steps of its kind still to come."""
        now = self.clock()
        if self.done < self.total:
            self.spent.setdefault(self.plan[self.done], []).append(now - self._step_started)
        self.done += 1
        self._step_started = now

    def skip_to(self, step: int) -> None:
        """Steps up to step are over without having done their work (a recipe that failed): no time is learnt."""
        self.done = max(self.done, step)
        self._step_started = self.clock()

    def report(self, stage: str, message: str, fraction_of_step: float = 0.0) -> None:
        self.check()
        logger.debug("tuning: %s", message)
        if self.on_progress:
            left = self.seconds_left(fraction_of_step)
            elapsed = self.clock() - self.started
            progress = min(1.0, elapsed / (elapsed + left)) if left is not None else self.done / max(1, self.total)
            # A new step can estimate the rest longer than the last report did; the bar waits rather than going back.
            progress = self._shown = max(self._shown, progress)
            step = min(self.done + 1, self.total)
            self.on_progress(stage, progress, f"step {step}/{self.total}: {message}{said(left, progress)}")

    def seconds_left(self, fraction_of_step: float = 0.0) -> float | None:
        """Seconds the rest of the run takes at the pace measured so far (None before anything is measured)."""
        if not self.spent or self.done >= self.total:
            return None if self.done < self.total else 0.0
        in_step = self.clock() - self._step_started
        current = self.estimate(self.plan[self.done])
        if fraction_of_step > 0:
            current = max(current, in_step / fraction_of_step)  # the step's own pace once it has one
        left = max(0.0, current - in_step)
        return left + sum(self.estimate(kind) for kind in self.plan[self.done + 1:])

    def estimate(self, kind: str) -> float:
        """Seconds a step of this kind takes: the timing rounds from the inference times measured, another from
        the finished steps of its kind, else from the mean finished step."""
        if kind == TIMING and self.inference_s and self.timing_inferences:
            measured = list(self.inference_s.values())
            unmeasured = self.plan[self.done:].count("agreement")  # candidates still to run on the held-back frames
            per_round = sum(measured) + unmeasured * (sum(measured) / len(measured))
            return self.timing_inferences * per_round
        seen = self.spent.get(kind) or [s for spent in self.spent.values() for s in spent]
        return sum(seen) / len(seen)


def said(left: float | None, progress: float) -> str:
    """' (about N s left)' once the estimate means something, else ''."""
    if left is None or progress < MIN_PROGRESS_FOR_LEFT or progress >= 1:
        return ""
    return f" (about {left / 60:.0f} min left)" if left >= 90 else f" (about {left:.0f} s left)"
