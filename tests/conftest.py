"""Shared fixtures: the app, live waitress servers (tests.support.helpers), real YOLO models built from yaml, generated videos."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from server import create_app
from tests.support.helpers import LiveServer, config_for, serving, write_video
from tests.support.model_zoo import build_model_zoo

os.environ.setdefault("YOLO_OFFLINE", "1")

pytest_plugins = ["tests.support.browser_fixtures"]


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


@pytest.fixture
def config(tmp_path):
    return config_for(tmp_path)


@pytest.fixture
def app(config):
    app = create_app(config)
    yield app
    app.extensions["lifecycle"].stop()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def live_server(config, app):
    """The test app served for the length of a test."""
    with serving(config, app) as live:
        yield live


@pytest.fixture
def serve(tmp_path):
    """Return start(token=False, **config overrides): serve a new app built from config_for, until the test ends.

    Each server started in one test gets an uploads folder of its own unless uploads= says otherwise;
    token=True turns token access on although the server listens on loopback (where it is off).
    """
    with contextlib.ExitStack() as stack:
        started = []

        def start(token: bool = False, **overrides) -> LiveServer:
            overrides.setdefault("uploads", tmp_path / ("uploads" if not started else f"uploads-{len(started)}"))
            live = stack.enter_context(serving(config_for(tmp_path, **overrides)))
            if token:
                live.app.extensions["access"].mode = "token"
            started.append(live)
            return live

        yield start


SLOW_FIXTURES = {"model_zoo", "yolov8n_pt", "yolov8n_onnx", "browser", "tabs", "tuned"}


def pytest_collection_modifyitems(config, items):
    """Mark as slow every test that needs the model zoo (built by training and exporting) or a browser."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
