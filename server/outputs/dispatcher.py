"""The bounded hand-over between the producer and one output's worker thread.

The producer (the stream's render thread, through the events recorder) must never wait for a broker or a web
server. So each output owns a BoundedQueue: put() takes a lock held only for a deque append and returns at
once; when the queue is full the new message is refused and counted as dropped, so a target that is down for
an hour costs at most `capacity` messages of memory. The worker also sleeps on this queue's condition, so
coalesced state (the latest counts, the latest snapshot) can wake it with poke() without queueing anything.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Counters:
    """What an output has done, for status: sent, failed (gave up), dropped (queue full)."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped}


class BoundedQueue:
    """A FIFO of at most `capacity` items; put() never blocks, get() waits up to a timeout."""

    def __init__(self, capacity: int, counters: Counters | None = None):
        if capacity < 1:
            raise ValueError("an output's queue holds at least one message")
        self.capacity = capacity
        self.counters = counters or Counters()
        self.offered = 0  # every put() call, accepted or not: what tests count against
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._poked = False

    def put(self, item) -> bool:
        """Queue item and wake the worker; return False (and count a drop) when the queue is full."""
        with self._cond:
            self.offered += 1
            if len(self._items) >= self.capacity:
                self.counters.add("dropped")
                return False
            self._items.append(item)
            self._cond.notify()
            return True

    def poke(self) -> None:
        """Wake the worker without queueing anything (coalesced state changed)."""
        with self._cond:
            self._poked = True
            self._cond.notify()

    def wait(self, timeout: float, for_items: bool = True) -> None:
        """Sleep until poke() or put() is called or timeout seconds pass; return at once if poked, or if
        items are waiting and for_items (a worker that cannot send them now passes False, or it would spin)."""
        with self._cond:
            if not (self._poked or (for_items and self._items)):
                self._cond.wait(timeout)
            self._poked = False

    def pop(self):
        """Remove and return the oldest item, or None."""
        with self._cond:
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
