"""Tracker: stable ids across detector frames, flow-driven boxes in between, births and deaths."""

from __future__ import annotations

import cv2
import numpy as np

from server.vision.processing import Detections
from server.vision.tracker import Tracker, greedy_match, iou_matrix

FRAME_HW = (240, 320)
SIDE = 60


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Return a blurred random BGR texture, rich in corners for optical flow."""
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 1.5)


class Scene:
    """Textured squares moving at constant velocity over a textured background."""

    def __init__(self, starts: list[tuple[float, float]], velocities: list[tuple[float, float]], seed: int = 0):
        rng = np.random.default_rng(seed)
        self.background = texture(rng, *FRAME_HW) // 2  # darker, so the squares stand out
        self.patches = [texture(rng, SIDE, SIDE) for _ in starts]
        self.starts = np.array(starts, np.float64)
        self.velocities = np.array(velocities, np.float64)

    def boxes(self, index: int) -> np.ndarray:
        """Return the true xyxy boxes on frame `index`."""
        top_left = np.round(self.starts + self.velocities * index)
        return np.concatenate([top_left, top_left + SIDE], axis=1)

    def frame(self, index: int) -> np.ndarray:
        """Render frame `index`."""
        image = self.background.copy()
        for patch, (x1, y1, _, _) in zip(self.patches, self.boxes(index).astype(int)):
            image[y1 : y1 + SIDE, x1 : x1 + SIDE] = patch
        return image

    def detections(self, index: int, which: list[int] | None = None) -> Detections:
        """Return perfect detections of the chosen squares (all by default), class 0."""
        boxes = self.boxes(index)[which if which is not None else slice(None)]
        count = len(boxes)
        return Detections(boxes.astype(np.float32), np.full(count, 0.9, np.float32), np.zeros(count, np.int64))


def run(tracker: Tracker, scene: Scene, frames: int, detect_every: int) -> list[Detections]:
    """Feed frames to the tracker the way the pipeline does and return each frame's output."""
    outputs = []
    for index in range(frames):
        frame = scene.frame(index)
        if index % detect_every == 0:
            outputs.append(tracker.update(frame, scene.detections(index)))
        else:
            outputs.append(tracker.propagate(frame))
    return outputs


def test_moving_box_keeps_its_id_with_detect_every_3():
    scene = Scene([(20, 40)], [(5, 2)])
    outputs = run(Tracker(), scene, frames=30, detect_every=3)
    assert all(len(out) == 1 for out in outputs)
    assert {int(out.track_ids[0]) for out in outputs} == {1}


def test_two_boxes_keep_distinct_ids():
    scene = Scene([(10, 20), (240, 150)], [(4, 1), (-4, -1)])
    outputs = run(Tracker(), scene, frames=30, detect_every=3)
    first = outputs[0]
    ids_by_position = {tuple(box.round()): int(tid) for box, tid in zip(first.boxes, first.track_ids)}
    assert sorted(ids_by_position.values()) == [1, 2]
    left_id = int(first.track_ids[np.argmin(first.boxes[:, 0])])
    for index, out in enumerate(outputs):
        assert len(out) == 2
        truth = scene.boxes(index)
        # The square that started on the left moves right; its id must follow it.
        left_truth = truth[0]
        match = int(np.argmax(iou_matrix(left_truth[None], out.boxes.astype(np.float64))[0]))
        assert int(out.track_ids[match]) == left_id


def test_propagate_follows_the_true_box():
    scene = Scene([(20, 40)], [(8, 3)])
    tracker = Tracker()
    start = tracker.update(scene.frame(0), scene.detections(0))
    for index in range(1, 6):
        out = tracker.propagate(scene.frame(index))
        truth = scene.boxes(index)
        assert iou_matrix(out.boxes.astype(np.float64), truth)[0, 0] > 0.7
    # A box that stayed put would have lost the object by now, so the check above means something.
    assert iou_matrix(start.boxes.astype(np.float64), scene.boxes(5))[0, 0] < 0.5


def test_vanished_box_is_hidden_then_dropped_after_max_age():
    scene = Scene([(20, 40)], [(2, 0)])
    tracker = Tracker(max_age=6)
    first = tracker.update(scene.frame(0), scene.detections(0))
    empty = scene.detections(1, which=[])
    assert len(tracker.update(scene.frame(1), empty)) == 0
    assert len(tracker.propagate(scene.frame(2))) == 0  # lost tracks are not drawn
    assert len(tracker.tracks) == 1  # but kept, to take the same id back if the object returns
    back = tracker.update(scene.frame(3), scene.detections(3))
    assert back.track_ids.tolist() == first.track_ids.tolist()
    for index in range(4, 12):
        tracker.update(scene.frame(index), empty)
    assert tracker.tracks == []
    reborn = tracker.update(scene.frame(12), scene.detections(12))
    assert reborn.track_ids.tolist() != first.track_ids.tolist()


def test_different_classes_are_not_matched():
    scene = Scene([(20, 40)], [(0, 0)])
    tracker = Tracker()
    first = tracker.update(scene.frame(0), scene.detections(0))
    other_class = scene.detections(1)
    other_class.class_ids[:] = 3
    second = tracker.update(scene.frame(1), other_class)
    assert second.track_ids[0] != first.track_ids[0]


def test_reset_restarts_ids():
    scene = Scene([(20, 40)], [(1, 0)])
    tracker = Tracker()
    tracker.update(scene.frame(0), scene.detections(0))
    tracker.reset()
    assert tracker.update(scene.frame(1), scene.detections(1)).track_ids.tolist() == [1]


def test_greedy_match_takes_the_best_pairs_first():
    similarity = np.array([[0.9, 0.8], [0.85, 0.4]])
    assert greedy_match(similarity, 0.3) == [(0, 0), (1, 1)]
    assert greedy_match(similarity, 0.5) == [(0, 0)]
