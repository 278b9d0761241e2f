"""Offline demo: synthetic shapes renderer, dataset, demo video and a small model trained on them."""

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
DEMO_ONNX = MODEL_DIR / "shapes-yolov8n.onnx"
DEMO_PT = MODEL_DIR / "shapes-yolov8n.pt"
