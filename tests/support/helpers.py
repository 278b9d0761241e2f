"""What the tests share: the test config, the in-process live server, generated videos.

The live server is built as run.py builds it: create_app(config) and make_server(app, config) from one Config,
on 127.0.0.1 with an ephemeral port. Test modules import from here (or get fixtures from conftest.py), never
from one another.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import requests
from waitress import wasyncore

from harness.client import upload
from server import create_app
from server.config import Config
from server.vision.engines import ONNXRUNTIME
from server.vision.pipeline import FramePipeline
from server.vision.settings import Settings
from server.vision.sources import FileChoice
from server.vision.stream import StreamRunner
from server.vision.tracker import Tracker
from server.web.wsgi import make_server

TEST_HTTP_THREADS = 16  # enough for a few viewers and the page's API calls
STOP_TIMEOUT_S = 5


def config_for(root: Path, **overrides) -> Config:
    """The config tests run with: uploads under root, loopback, an ephemeral port, a few HTTP workers.

    The engine is ONNX Runtime, not auto: a test about something else must not start timing engines in the
    background (the tests of auto ask for it: engine="auto").
    """
    base = Config(uploads=root / "uploads", host="127.0.0.1", port=0, http_threads=TEST_HTTP_THREADS,
                  engine=ONNXRUNTIME)
    return replace(base, **overrides)


@dataclass
class LiveServer:
    """A served app: its URL, port, app and uploads folder."""

    url: str
    port: int
    app: object
    config: Config

    @property
    def uploads(self) -> Path:
        return Path(self.config.uploads)

    @property
    def token(self) -> str:
        return self.app.extensions["access"].token

    def session(self) -> requests.Session:
        """A client signed in the way a browser is: the token exchanged for the cookie."""
        session = requests.Session()
        assert session.get(f"{self.url}/?token={self.token}", timeout=10).status_code == 200
        return session

    def status(self) -> dict:
        return requests.get(f"{self.url}/api/status", timeout=30).json()


@contextlib.contextmanager
def serving(config: Config, app=None) -> Iterator[LiveServer]:
    """Serve create_app(config) (or app, built from config) with waitress as run.py does, until the block ends."""
    app = app or create_app(config)
    server = make_server(app, config)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.effective_port}", int(server.effective_port), app, config)
    finally:
        app.extensions["lifecycle"].stop()
        stop_waitress(server)
        thread.join(timeout=STOP_TIMEOUT_S)


def stop_waitress(server) -> None:
    """Close every connection and the listener on waitress' own loop, end its workers, then close its trigger.

    server.close() alone leaves open connections (a viewer, a keep-alive) in the loop until their channel
    timeout; closing them from the loop thread (through the trigger) avoids racing it. The trigger (a pipe
    that waitress' close() closes too) goes last: a worker finishing a response pulls it, and a pull on a
    closed pipe is EBADF in that worker.
    """

    def close_connections() -> None:
        for channel in list(server.active_channels.values()):
            channel.handle_close()
        wasyncore.dispatcher.close(server)  # the listener only

    server.trigger.pull_trigger(close_connections)
    server.task_dispatcher.shutdown(timeout=STOP_TIMEOUT_S)
    try:
        server.trigger.pull_trigger(server.trigger.close)  # the loop's map is then empty: run() returns
    except OSError as error:  # the loop closed the trigger itself (it saw its pipe fail): it has ended already
        if error.errno != errno.EBADF:
            raise


def upload_model_at_320(base: str, model: Path) -> None:
    """Upload a model over HTTP and set the input size to 320, the quick size the stream tests run at."""
    response = upload(base, "/upload/model", model)
    assert response.status_code == 201, response.text
    requests.post(f"{base}/api/settings", json={"imgsz": 320}, timeout=10).raise_for_status()


def write_video(path: Path, width: int = 640, height: int = 480, fps: float = 15, frames: int = 45) -> Path:
    """Write a video of a textured background with two moving shapes (mp4v for .mp4, MJPG for .avi)."""
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), np.uint8), (0, 0), 6)
    for i in range(frames):
        image = background.copy()
        x = int((i * 9) % max(1, width - 120))
        cv2.rectangle(image, (x, height // 4), (x + 100, height // 4 + 80), (30, 30, 220), -1)
        cv2.circle(image, (width - x - 60, 3 * height // 4), 45, (40, 200, 40), -1)
        cv2.putText(image, str(i), (10, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    return path


def files_under(root: Path) -> list[str]:
    """Every file below root, as sorted posix paths relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def make_runner(video, detector, settings: Settings, **kwargs) -> tuple[StreamRunner, list]:
    """A runner over a real video and the demo model; the list collects the errors it ended with."""
    ended: list = []
    pipeline = FramePipeline(lambda s: detector, [f"c{i}" for i in range(5)], tracker_factory=Tracker)
    open_source = kwargs.pop("open_source", None) or FileChoice(video).open
    runner = StreamRunner(open_source, pipeline, lambda: settings, ended.append, **kwargs)
    return runner, ended
