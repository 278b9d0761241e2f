"""Offline demo data: synthetic shapes renderer, dataset, demo video and a small model trained on them.

What `run.py --demo` loads; server.web.demo hands it to the service.
"""

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
DEMO_ONNX = MODEL_DIR / "shapes-yolov8n.onnx"
DEMO_PT = MODEL_DIR / "shapes-yolov8n.pt"
DEMO_VIDEO_NAME = "demo-shapes.mp4"


def is_demo(video, model) -> bool:
    """Whether the stored video and model (uploads.StoredVideo/StoredModel or None) are the ones --demo loads."""
    return video is not None and model is not None and (video.name, model.name) == (DEMO_VIDEO_NAME, DEMO_ONNX.name)
