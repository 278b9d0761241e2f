"""Shared fixtures: the app, a live waitress server, real YOLO models built from yaml, generated videos."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from server import create_app
from server.config import Config
from server.web.wsgi import make_server
from tests.model_zoo import build_model_zoo

os.environ.setdefault("YOLO_OFFLINE", "1")

pytest_plugins = ["tests.browser_fixtures"]


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


@pytest.fixture(scope="session")
def model_zoo(request) -> Path:
    """Checkpoints and ONNX exports built from ultralytics' yaml files (no download), once per cache."""
    return build_model_zoo(Path(request.config.cache.mkdir("model_zoo")))


@pytest.fixture(scope="session")
def yolov8n_pt(model_zoo) -> Path:
    return model_zoo / "yolov8n.pt"


@pytest.fixture(scope="session")
def yolov8n_onnx(model_zoo) -> Path:
    return model_zoo / "yolov8n.onnx"


@pytest.fixture
def make_video(tmp_path):
    """Return a function that writes a generated video under tmp_path and returns its path."""

    def make(name: str = "clip.mp4", **kwargs) -> Path:
        return write_video(tmp_path / name, **kwargs)

    return make


DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "server" / "demo" / "model"


@pytest.fixture(scope="session")
def demo_onnx() -> Path:
    """The committed demo model (YOLOv8n, 5 shape classes): for tests about the server, not about model files."""
    return DEMO_MODEL_DIR / "shapes-yolov8n.onnx"


@pytest.fixture(scope="session")
def demo_detector(demo_onnx):
    """A warmed-up one-thread session of the demo model, for tests of the stream machinery."""
    from server.vision.detector import Detector

    detector = Detector(demo_onnx, threads=1)
    detector.warm_up((320, 320))
    return detector


@pytest.fixture(scope="session")
def demo_pt() -> Path:
    return DEMO_MODEL_DIR / "shapes-yolov8n.pt"


def config_for(tmp_path: Path, **overrides) -> Config:
    """The config tests run with: uploads under tmp_path, enough threads for a few viewers."""
    return Config(**{"uploads": tmp_path / "uploads", "host": "127.0.0.1", "threads": 16, **overrides})


@pytest.fixture
def app(tmp_path):
    app = create_app(config_for(tmp_path))
    yield app
    app.extensions["detection"].stop()


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class LiveServer:
    url: str
    uploads: Path
    app: object


@contextlib.contextmanager
def serving(app, threads: int = 16) -> Iterator[LiveServer]:
    """Serve an app with waitress (set up exactly as run.py does) on an ephemeral 127.0.0.1 port."""
    server = make_server(app, "127.0.0.1", 0, threads=threads)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.effective_port}", Path(app.extensions["uploads"].root), app)
    finally:
        app.extensions["detection"].stop()
        server.close()
        thread.join(timeout=5)


@pytest.fixture
def live_server(app):
    """The test app served for the length of a test."""
    with serving(app) as live:
        yield live


@pytest.fixture
def serve(tmp_path):
    """Return a function that serves a new app built from config_for(**overrides), stopped after the test.

    Each server started in one test gets an uploads folder of its own.
    """
    with contextlib.ExitStack() as stack:
        started = []

        def start(**overrides) -> LiveServer:
            uploads = tmp_path / ("uploads" if not started else f"uploads-{len(started)}")
            live = stack.enter_context(serving(create_app(config_for(tmp_path, uploads=uploads, **overrides))))
            started.append(live)
            return live

        yield start


SLOW_FIXTURES = {"model_zoo", "yolov8n_pt", "yolov8n_onnx", "browser", "tabs", "tuned"}


def pytest_collection_modifyitems(config, items):
    """Mark as slow every test that needs the model zoo (built by training and exporting) or a browser."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
