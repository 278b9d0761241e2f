"""Turns at the CPU for inference: the stream's detector and the on-device timing never infer at once.

The auto job times every candidate while the stream plays. Run side by side on a small CPU, the job's figures were
a race against the stream's own threads (NCNN's OpenMP workers waiting for cores came out at 0.09-0.18x of ONNX
Runtime fp32) and the stream fell to 1-3 fps. Taking turns gives each timed inference the CPU as it would have it
as the stream's detector (a stream never runs two inferences at once either); a timed inference starts only once
the stream's last one has had time to let its threads go idle (ONNX Runtime spins a little, ncnn's OpenMP workers
wait up to 20 ms); and after each timed inference the job rests twice as long as it took while a stream plays, so
the stream keeps about two thirds of the inference time and, with its decoding and drawing around it, at least half
of its rate.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

# After the stream's inference, before a timed block: ncnn's OpenMP block time (20 ms), and the stream's draw, encode
# and next decode of that frame, which run on threads of their own. bench/fair_timing.py, 2 quiet cores, demo at 320:
# timed one inference a turn after 25 ms, NCNN came out 3.5-4.7x slower beside the stream than alone; four a turn
# after 50 ms, 0.92-1.23x, the stream at 82% of its rate (100 ms: within the machine's noise, the stream at 65%).
SETTLE_S = 0.05
PLAYING_S = 2.0  # a stream that inferred this recently is playing
# The stream's turn after a timed inference, in multiples of it. 1 (an equal share) left the stream 35% of its rate
# beside NCNN's timing on 2 busy cores (bench/fair_timing.py): it also decodes, draws and encodes around inference.
REST_FACTOR = 2.0


class InferenceTurns:
    """One inference at a time between the stream (stream()) and the timing job (timed() then rest())."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._stream_done_at = float("-inf")
        self._owed = 0.0  # seconds the last timed inference took: the stream's turn that follows

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """The stream's inference: waits only while a timed inference runs."""
        with self._lock:
            try:
                yield
            finally:
                self._stream_done_at = self.clock()

    def playing(self) -> bool:
        return self.clock() - self._stream_done_at < PLAYING_S

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """One of the timing job's inferences, alone on the CPU; time only what runs inside."""
        with self._lock:
            settle = SETTLE_S - (self.clock() - self._stream_done_at)
            if settle > 0:
                self.sleep(settle)
            started = self.clock()
            yield
            self._owed = self.clock() - started

    def rest(self) -> None:
        """After a timed inference, outside its timing: leave the stream its turn while it plays."""
        owed, self._owed = self._owed, 0.0
        if owed > 0 and self.playing():
            self.sleep(REST_FACTOR * owed)


def nothing() -> contextlib.AbstractContextManager:
    """The turn of a detector that shares the CPU with no one (benchmarks, tools, tests)."""
    return contextlib.nullcontext()
