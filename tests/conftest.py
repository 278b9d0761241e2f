"""Shared fixtures: the app, a live waitress server, real YOLO models built from yaml, generated videos."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from server import create_app
from server.config import Config
from server.wsgi import make_server
from tests.model_zoo import build_model_zoo

os.environ.setdefault("YOLO_OFFLINE", "1")


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


@pytest.fixture
def app(tmp_path):
    app = create_app(Config(uploads=tmp_path / "uploads", threads=16))
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


@pytest.fixture
def live_server(app):
    """Serve the app with waitress on an ephemeral 127.0.0.1 port for the length of a test."""
    server = make_server(app, "127.0.0.1", 0, threads=16)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    yield LiveServer(f"http://127.0.0.1:{server.effective_port}", Path(app.extensions["uploads"].root), app)
    app.extensions["detection"].stop()
    server.close()
    thread.join(timeout=5)
