"""Progress of the benchmark's long steps on stderr."""

from __future__ import annotations

import sys
import time


class ProgressLine:
    """Show progress on stderr: a redrawn bar on a terminal, a line every tenth otherwise."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, max(1, total)
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self._last_tenth = -1

    def update(self, done: int, extra: str = "") -> None:
        fraction = min(1.0, done / self.total)
        tenth = int(fraction * 10)
        if not self.tty and tenth == self._last_tenth:
            return
        self._last_tenth = tenth
        bar = "#" * int(fraction * 20)
        line = f"  {self.label:<22} [{bar:<20}] {done}/{self.total} {extra}"
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()

    def close(self, summary: str = "") -> None:
        elapsed = time.perf_counter() - self.started
        sys.stderr.write(("\r" if self.tty else "") + f"  {self.label:<22} done in {elapsed:.1f}s {summary}\n")
        sys.stderr.flush()
