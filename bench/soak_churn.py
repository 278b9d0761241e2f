"""What a soak with --churn does to the server: viewers who come and go, settings that change, Stop and Start.

Played as a user who plays with the settings would (issue 28, part 7): every few seconds another engine, precision,
detect_every and input size, chosen at random from what the server offers (seeded: two runs make the same changes);
every minute the stream stops and starts again; each viewer watches for a while, leaves, and another comes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import requests

from bench.fps.server_http import Viewer
from harness.waiting import wait_for

logger = logging.getLogger("soak")

DETECT_EVERY = (1, 2, 3, "auto")
IMGSZ = (320, 416, 640)
START_RETRIES = 20  # Start is refused (409) while the previous stream is still stopping: try again each second
TIMEOUT_S = 60  # a change that swaps the engine loads and warms it up before answering the next request


class Crowd:
    """Keep `count` viewers reading /video_feed; each leaves after a random lifetime (None: they stay)."""

    def __init__(self, url: str, count: int, lifetime_s: tuple[float, float] | None, seed: int = 28):
        self.url, self.count, self.lifetime_s = url, count, lifetime_s
        self.random = random.Random(seed)
        self.watching: list[tuple[Viewer, float]] = []  # (viewer, when it leaves)
        self.left_frames, self.errors, self.visits = 0, [], 0

    def keep_up(self) -> None:
        """Let the viewers whose time is up leave (and count those the server let go), then fill the places."""
        now = time.monotonic()
        staying = []
        for viewer, leaves_at in self.watching:
            if viewer.is_alive() and now < leaves_at:
                staying.append((viewer, leaves_at))
            else:
                self._gone(viewer)
        self.watching = staying
        while len(self.watching) < self.count:
            viewer = Viewer(self.url)
            viewer.start()
            lifetime = self.random.uniform(*self.lifetime_s) if self.lifetime_s else float("inf")
            self.watching.append((viewer, now + lifetime))
            self.visits += 1

    def _gone(self, viewer: Viewer) -> None:
        viewer.stop.set()  # it closes its connection once the next part (or the end) arrives
        self.left_frames += viewer.frames
        if viewer.error:
            self.errors.append(viewer.error)

    def frames(self) -> int:
        return self.left_frames + sum(viewer.frames for viewer, _ in self.watching)

    def leave(self) -> None:
        for viewer, _ in self.watching:
            self._gone(viewer)
        self.watching = []


class Churn:
    """Change the settings every change_every seconds and Stop/Start every restart_every seconds."""

    def __init__(self, url: str, change_every: float, restart_every: float,
                 measure: Callable[[], dict] = dict, seed: int = 28):
        self.url, self.change_every, self.restart_every = url, change_every, restart_every
        self.measure = measure  # the server's memory, read while it is stopped
        self.random = random.Random(seed)
        self.next_change, self.next_restart = change_every, restart_every
        self.changes = self.restarts = 0
        self.refused: list[str] = []  # requests the server did not answer with success
        # The memory at each Stop, once the tuning it cancels has ended: nothing runs, so these compare like for like
        # (samples taken while the tuning runs differ by its phase, some hundred MB).
        self.stopped: list[dict] = []
        self.chosen: dict[str, int] = {}  # how often each engine/precision ran

    def step(self, elapsed: float) -> None:
        """Make the changes that are due at `elapsed` seconds into the run."""
        if elapsed >= self.next_restart:
            self.next_restart += self.restart_every
            self.restart(elapsed)
        if elapsed >= self.next_change:
            self.next_change += self.change_every
            self.change()

    def _status(self) -> dict:
        return requests.get(f"{self.url}/api/status", timeout=TIMEOUT_S).json()

    def change(self) -> None:
        """Post a random choice among what the server offers now."""
        options = self._status()["options"]
        engine = self.random.choice(options["engine"])
        precisions = options["engines"].get(engine, ["fp32"])  # auto runs its verdict, whatever precision says
        changes = {
            "engine": engine,
            "precision": self.random.choice(precisions),
            "detect_every": self.random.choice(DETECT_EVERY),
            "imgsz": self.random.choice([size for size in IMGSZ if size in options["imgsz"]] or options["imgsz"]),
        }
        self._post("/api/settings", changes)
        name = f"{engine} {changes['precision']}" if engine != "auto" else engine
        self.chosen[name] = self.chosen.get(name, 0) + 1
        self.changes += 1

    def restart(self, elapsed: float) -> None:
        """Stop, measure the memory once the tuning has ended too, then Start again as soon as the server takes it."""
        self._post("/stream/stop")
        if wait_for(lambda: not self._status()["precision"]["building"], TIMEOUT_S, 0.2):
            self.stopped.append({"seconds": round(elapsed), **self.measure()})
        for _ in range(START_RETRIES):
            response = requests.post(f"{self.url}/stream/start", timeout=TIMEOUT_S)
            if response.status_code != 409:
                break
            time.sleep(1)
        if not response.ok:
            self.refused.append(f"start: {response.status_code} {response.text[:200]}")
        self.restarts += 1

    def _post(self, path: str, body: dict | None = None) -> None:
        response = requests.post(f"{self.url}{path}", json=body, timeout=TIMEOUT_S)
        if not response.ok:
            self.refused.append(f"{path} {body}: {response.status_code} {response.text[:200]}")
            logger.warning("%s refused: %s", path, self.refused[-1])

    def summary(self) -> dict:
        return {"changes": self.changes, "restarts": self.restarts, "chosen": self.chosen, "refused": self.refused,
                "stopped": self.stopped}

