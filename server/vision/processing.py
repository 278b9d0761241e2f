"""Pure pre- and post-processing for YOLOv8 detect models: letterbox, decode, NMS, box scaling."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

STRIDE = 32
PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How a frame was resized and padded into the network input."""

    scale: float
    pad_x: float
    pad_y: float


@dataclass
class Detections:
    """Boxes in frame pixels (x1, y1, x2, y2), with scores, class ids and optional track ids."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    track_ids: np.ndarray | None = None
    nonfinite: int = 0  # candidates above conf dropped because their box or score was NaN or infinite

    def __len__(self) -> int:
        return len(self.boxes)


def input_shape_for(frame_hw: tuple[int, int], imgsz: int, stride: int = STRIDE) -> tuple[int, int]:
    """Return the aspect-true network input (h, w): long side imgsz, short side padded to a stride multiple."""
    height, width = frame_hw
    scale = imgsz / max(height, width)
    new_h = int(np.ceil(round(height * scale) / stride) * stride)
    new_w = int(np.ceil(round(width * scale) / stride) * stride)
    return min(new_h, imgsz), min(new_w, imgsz)


def letterbox(image: np.ndarray, shape_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio and pad symmetrically to shape_hw, as ultralytics does."""
    height, width = image.shape[:2]
    target_h, target_w = shape_hw
    scale = min(target_h / height, target_w / width)
    new_w, new_h = round(width * scale), round(height * scale)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (target_w - new_w) / 2, (target_h - new_h) / 2
    top, bottom = round(pad_y - 0.1), round(pad_y + 0.1)
    left, right = round(pad_x - 0.1), round(pad_x + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(
            image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
    return image, Letterbox(scale, pad_x, pad_y)


def to_tensor(image_bgr: np.ndarray) -> np.ndarray:
    """Convert a BGR uint8 image to a 1x3xHxW float32 RGB tensor in [0, 1]."""
    return cv2.dnn.blobFromImage(image_bgr, scalefactor=1 / 255.0, swapRB=True)


def preprocess(frame: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Letterbox a BGR frame to input_hw and return the network tensor and the letterbox used."""
    padded, box = letterbox(frame, input_hw)
    return to_tensor(padded), box


def decode(
    output: np.ndarray, conf: float, classes: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn a 1 x (4+nc) x anchors YOLOv8 output into xyxy boxes, scores and class ids above conf.

    The best class is found on the output as it comes (one contiguous row per class) and only the
    few anchors above conf are transposed: transposing every anchor first cost several times more.
    """
    rows = output[0]  # (4 + nc) x anchors
    class_scores = rows[4:]
    wanted = None
    if classes is not None:
        # sorted(set()), not np.unique: its first call imports numpy.ma (a 40 M instruction hiccup mid-stream)
        wanted = np.asarray(sorted({int(c) for c in classes if 0 <= c < len(class_scores)}), np.int64)
        class_scores = class_scores[wanted]
    if len(class_scores) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    best = class_scores.max(axis=0)
    keep = np.flatnonzero(best > conf)
    class_ids = class_scores[:, keep].argmax(axis=0)
    if wanted is not None:
        class_ids = wanted[class_ids]
    xywh = rows[:4, keep].T
    boxes = np.empty((len(keep), 4), np.float32)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    return boxes, best[keep].astype(np.float32), class_ids.astype(np.int64)


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Return the pairwise IoU of two sets of xyxy boxes, shape (len(a), len(b)): NMS, tracker and mAP share it."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float, max_det: int = 300
) -> np.ndarray:
    """Class-aware greedy non-maximum suppression; return kept indices, best first."""
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    # Offsetting each class far apart makes one pass suppress only within a class.
    shifted = boxes + (class_ids[:, None] * 8192.0)
    order = scores.argsort()[::-1]
    keep = []
    while order.size and len(keep) < max_det:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[iou_matrix(shifted[best], shifted[rest])[0] <= iou]
    return np.asarray(keep, np.int64)


def scale_boxes(boxes: np.ndarray, box: Letterbox, frame_hw: tuple[int, int]) -> np.ndarray:
    """Map xyxy boxes from network input pixels back to frame pixels, clipped to the frame."""
    height, width = frame_hw
    scaled = boxes.copy()
    scaled[:, [0, 2]] = (scaled[:, [0, 2]] - box.pad_x) / box.scale
    scaled[:, [1, 3]] = (scaled[:, [1, 3]] - box.pad_y) / box.scale
    scaled[:, [0, 2]] = scaled[:, [0, 2]].clip(0, width)
    scaled[:, [1, 3]] = scaled[:, [1, 3]].clip(0, height)
    return scaled


def postprocess(
    output: np.ndarray,
    box: Letterbox,
    frame_hw: tuple[int, int],
    conf: float,
    iou: float,
    classes: list[int] | None = None,
    max_det: int = 300,
) -> Detections:
    """Decode, suppress and scale a raw YOLOv8 output into frame-space detections.

    Candidates whose box or score is not finite (a broken or hostile model) are dropped before NMS, where NaN
    would defeat the IoU test, and counted in Detections.nonfinite.
    """
    boxes, scores, class_ids = decode(output, conf, classes)
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    nonfinite = int(len(finite) - finite.sum())
    if nonfinite:
        boxes, scores, class_ids = boxes[finite], scores[finite], class_ids[finite]
    keep = nms(boxes, scores, class_ids, iou, max_det)
    return Detections(scale_boxes(boxes[keep], box, frame_hw), scores[keep], class_ids[keep], nonfinite=nonfinite)
