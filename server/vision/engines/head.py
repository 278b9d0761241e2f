"""The YOLOv8 Detect head's last steps in numpy: DFL, anchors and strides, class sigmoid (pure functions)."""

from __future__ import annotations

import numpy as np


def anchor_grid(level_hw: list[tuple[int, int]], strides: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Return anchor centres (2 x A, in grid cells: x then y, index + 0.5) and each anchor's stride (A,).

    As ultralytics' make_anchors: level by level, cells in row-major order.
    """
    points, steps = [], []
    for (height, width), stride in zip(level_hw, strides):
        ys, xs = np.meshgrid(np.arange(height, dtype=np.float32) + 0.5, np.arange(width, dtype=np.float32) + 0.5,
                             indexing="ij")
        points.append(np.stack([xs.reshape(-1), ys.reshape(-1)]))
        steps.append(np.full(height * width, stride, np.float32))
    return np.concatenate(points, axis=1), np.concatenate(steps)


def dfl_distances(box_logits: np.ndarray, reg_max: int, bins: np.ndarray) -> np.ndarray:
    """Turn 4*reg_max x A box logits into 4 x A distances: the expected bin under a softmax over each side's bins."""
    logits = box_logits.reshape(4, reg_max, -1)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.einsum("sba,b->sa", weights, bins) / weights.sum(axis=1)


def boxes_xywh(distances: np.ndarray, points: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """dist2bbox: (left, top, right, bottom) distances from the anchors -> centre x, y, width, height in pixels."""
    top_left, bottom_right = points - distances[:2], points + distances[2:]
    return np.concatenate([(top_left + bottom_right) / 2, bottom_right - top_left]) * strides


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


class HeadDecoder:
    """Decode raw per-level head maps into the 1 x (4 + nc) x anchors output; the anchors are kept per input size."""

    def __init__(self, strides: list[float], reg_max: int, bins: np.ndarray):
        self.strides, self.reg_max, self.bins = list(strides), reg_max, np.asarray(bins, np.float32)
        self._grids: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def grid(self, level_hw: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        key = tuple(level_hw)
        if key not in self._grids:
            self._grids = {key: anchor_grid(level_hw, self.strides)}  # one input size at a time
        return self._grids[key]

    def decode(self, levels: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """levels: per level (box map 4*reg_max x H x W, class logits nc x H x W) -> (4 + nc) x anchors."""
        points, strides = self.grid([box.shape[1:] for box, _ in levels])
        box_logits = np.concatenate([box.reshape(box.shape[0], -1) for box, _ in levels], axis=1)
        class_logits = np.concatenate([scores.reshape(scores.shape[0], -1) for _, scores in levels], axis=1)
        xywh = boxes_xywh(dfl_distances(box_logits, self.reg_max, self.bins), points, strides)
        return np.concatenate([xywh, sigmoid(class_logits)]).astype(np.float32, copy=False)

    def decode_above(self, levels: list[tuple[np.ndarray, np.ndarray]], conf: float) -> np.ndarray:
        """As decode, for the anchors whose best class scores above conf only: (4 + nc) x candidates.

        The sigmoid is monotonic, so the best class logit is compared with logit(conf) and the DFL softmax,
        the box decode and the sigmoid run on the few candidates, not on every anchor.
        """
        points, strides = self.grid([box.shape[1:] for box, _ in levels])
        class_logits = np.concatenate([scores.reshape(scores.shape[0], -1) for _, scores in levels], axis=1)
        threshold = np.log(conf / (1 - conf)) if 0 < conf < 1 else (-np.inf if conf <= 0 else np.inf)
        keep = np.flatnonzero(class_logits.max(axis=0) > threshold)
        starts = np.cumsum([0] + [box.shape[1] * box.shape[2] for box, _ in levels])
        box_logits = np.concatenate([box.reshape(box.shape[0], -1)[:, keep[(keep >= start) & (keep < end)] - start]
                                     for (box, _), start, end in zip(levels, starts[:-1], starts[1:])], axis=1)
        distances = dfl_distances(box_logits, self.reg_max, self.bins)
        xywh = boxes_xywh(distances, points[:, keep], strides[keep])
        return np.concatenate([xywh, sigmoid(class_logits[:, keep])]).astype(np.float32, copy=False)
