"""Draw detections and a status line on frames with OpenCV (no fonts to fetch)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from server.vision.processing import Detections

# Ultralytics' palette, so boxes look familiar to its users.
PALETTE_HEX = (
    "FF3838 FF9D97 FF701F FFB21D CFD231 48F90A 92CC17 3DDB86 1A9334 00D4BB "
    "2C99A8 00C2FF 344593 6473FF 0018EC 8438FF 520085 CB38FF FF95C8 FF37C7"
).split()
PALETTE_BGR = tuple(tuple(int(h[i : i + 2], 16) for i in (4, 2, 0)) for h in PALETTE_HEX)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(class_id: int) -> tuple[int, int, int]:
    return PALETTE_BGR[int(class_id) % len(PALETTE_BGR)]


def _text_on_band(image, text, origin, color, scale, thickness) -> None:
    """Write text on a filled band so it reads on any background."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = origin
    y = max(y, height + baseline)
    cv2.rectangle(image, (x, y - height - baseline), (x + width + 2, y + 1), color, cv2.FILLED)
    text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, y - baseline // 2), FONT, scale, text_color, thickness, cv2.LINE_AA)


def label_for(detections: Detections, i: int, class_names: list[str]) -> str:
    class_id = int(detections.class_ids[i])
    name = class_names[class_id] if class_id < len(class_names) else str(class_id)
    track = "" if detections.track_ids is None else f"#{int(detections.track_ids[i])} "
    return f"{track}{name} {detections.scores[i]:.2f}"


def drawable_boxes(boxes: np.ndarray, image_hw: tuple[int, int]) -> list[tuple[int, np.ndarray]]:
    """Return (index, integer box) for the boxes that can be drawn: finite, clipped to a margin around the image.

    OpenCV takes C ints: a NaN, infinite or huge coordinate (from a broken model or a lost track) would raise
    and end the stream, so such boxes are skipped and the rest clipped.
    """
    height, width = image_hw
    finite = np.flatnonzero(np.isfinite(boxes).all(axis=1)) if len(boxes) else np.zeros(0, np.int64)
    margin = max(height, width)
    low, high = np.array([-margin] * 2 * 2), np.array([width + margin, height + margin] * 2)
    return [(int(i), np.clip(boxes[i], low, high).round().astype(int)) for i in finite]


def draw_detections(image: np.ndarray, detections: Detections, class_names: list[str]) -> np.ndarray:
    """Draw boxes with class, score and track id labels onto image (in place) and return it."""
    scale = max(0.4, min(image.shape[:2]) / 900)
    thickness = max(1, round(scale * 2))
    for i, box in drawable_boxes(detections.boxes, image.shape[:2]):
        color = color_for(detections.class_ids[i])
        cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), color, thickness, cv2.LINE_AA)
        _text_on_band(image, label_for(detections, i, class_names), (box[0], box[1]), color, scale, 1)
    return image


@dataclass(frozen=True)
class Overlay:
    """What the status line on each frame says."""

    fps: float
    precision: str
    imgsz: int
    detect_every: int | str  # or "auto"
    objects: int

    def text(self) -> str:
        mode = f"{self.precision} {self.imgsz}" + (f" det/{self.detect_every}" if self.detect_every != 1 else "")
        return f"{self.fps:.1f} fps | {mode} | {self.objects} objects"


def draw_status(image: np.ndarray, overlay: Overlay) -> np.ndarray:
    """Write the status line (fps, model, size, objects) in the top-left corner."""
    scale = max(0.45, min(image.shape[:2]) / 800)
    _text_on_band(image, overlay.text(), (4, 4), (32, 32, 32), scale, 1)
    return image


def fit_width(image: np.ndarray, width: int | None) -> np.ndarray:
    """Resize to the given output width keeping aspect ratio; no-op when width is None or equal."""
    if width is None or width == image.shape[1]:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    interpolation = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)
