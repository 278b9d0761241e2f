"""The stream and the on-device timing take turns at the CPU (server.vision.turns): never two inferences at once,
a timed inference only after the stream's has settled, and the stream's turn after each timed one."""

from __future__ import annotations

import threading
import time

from server.vision.turns import PLAYING_S, REST_FACTOR, SETTLE_S, InferenceTurns


class Clock:
    """A clock the test moves; sleeping moves it too (and is recorded)."""

    def __init__(self):
        self.now, self.slept = 100.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_a_timed_inference_waits_for_the_streams_to_settle_and_then_leaves_it_its_turn():
    clock = Clock()
    turns = InferenceTurns(clock, clock.sleep)
    with turns.stream():
        clock.now += 0.040  # the stream's inference
    with turns.timed():
        assert clock.slept == [SETTLE_S]  # its threads went idle first
        clock.now += 0.300  # the candidate's inference
    turns.rest()
    assert clock.slept == [SETTLE_S, REST_FACTOR * 0.3]  # the stream's turn, in proportion to the timed inference


def test_without_a_stream_playing_the_timing_neither_settles_nor_rests():
    clock = Clock()
    turns = InferenceTurns(clock, clock.sleep)
    with turns.stream():
        pass
    clock.now += PLAYING_S + 1  # the stream stopped long ago
    with turns.timed():
        clock.now += 0.3
    turns.rest()
    assert clock.slept == []


def test_the_stream_never_infers_while_a_timed_inference_runs():
    turns = InferenceTurns()
    inside, overlaps = [], []
    start = threading.Barrier(2)

    def run(turn) -> None:
        start.wait()
        for _ in range(30):
            with turn():
                inside.append(1)
                time.sleep(0.002)  # an inference: the other thread runs meanwhile, and must wait
                if len(inside) > 1:
                    overlaps.append(len(inside))
                inside.pop()

    threads = [threading.Thread(target=run, args=(turns.stream,)), threading.Thread(target=run, args=(turns.timed,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert overlaps == []
