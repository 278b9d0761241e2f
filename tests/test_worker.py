"""server.jobs.Worker: one background thread at a time, its stop event, stop() that joins."""

from __future__ import annotations

import threading

import pytest

from server.jobs import Worker


def test_stop_sets_the_event_the_target_waits_on_and_joins_it():
    started, finished = threading.Event(), threading.Event()

    def target(label: str, stop: threading.Event) -> None:
        assert label == "job"
        started.set()
        stop.wait(10)
        finished.set()

    worker = Worker("test-worker")
    worker.start(target, "job")
    assert started.wait(5) and worker.running() and not worker.stopping
    assert worker.stop(timeout=5)
    assert finished.is_set() and not worker.running() and worker.stopping


def test_a_second_start_while_running_is_refused_and_a_new_start_gets_a_fresh_event():
    worker = Worker("test-worker", "the test job")
    first = worker.start(lambda stop: stop.wait(10))
    with pytest.raises(RuntimeError, match="the test job is already running"):
        worker.start(lambda stop: None)
    assert worker.stop(timeout=5)
    second = worker.start(lambda stop: None)
    assert first.is_set() and second is not first and not second.is_set()
    assert worker.stop(timeout=5)


def test_stop_reports_a_thread_that_does_not_end_in_time():
    release = threading.Event()
    worker = Worker("test-worker")
    worker.start(lambda stop: release.wait(10))  # ignores its stop event
    assert worker.stop(timeout=0.1) is False
    release.set()
    assert worker.stop(timeout=5)


def test_stop_from_the_worker_itself_does_not_wait_for_itself():
    worker = Worker("test-worker")
    done = threading.Event()
    worker.start(lambda stop: done.set() if worker.stop(timeout=5) else None)
    assert done.wait(5)


def test_wake_rouses_a_thread_sleeping_on_its_queue_once_the_event_is_set():
    """An output's sender sleeps on its queue's condition, not on the stop event: stop() wakes it at once."""
    condition, waiting, woken = threading.Condition(), threading.Event(), []

    def sender(stop: threading.Event) -> None:
        while not stop.is_set():
            with condition:
                waiting.set()  # under the lock: wake() cannot notify before the wait below has begun
                woken.append(condition.wait(60))  # a wait the stop event alone would not cut short

    def wake() -> None:
        with condition:
            condition.notify()

    worker = Worker("test-sender", wake=wake)
    worker.start(sender)
    assert waiting.wait(5)
    assert worker.stop(timeout=5) and woken == [True]
