"""The offline demo: shape renderer labels, dataset, demo video, mAP metrics and the committed demo model."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from server.demo import DEMO_ONNX
from server.demo.dataset import write_dataset
from server.demo.shapes import CLASSES, Shape, compose, render_scene
from server.demo.video import write_demo_video
from server.vision.detector import Detector
from server.vision.metrics import (
    iou_matrix,
    map50,
    match_detections,
    mean_average_precision,
)
from server.vision.processing import Detections
from tools.evaluate import (
    evaluate_model,
    labelled_images,
    read_yolo_labels,
    val_images_dir,
)

GREY = (90, 90, 90)


def flat(height: int = 240, width: int = 320) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def pixel_extent(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def shape(class_id: int, center, size: float = 80, angle: float = 0.3, color=(20, 200, 240), shading=0.0):
    return Shape(class_id, center, size, angle, color, shading)


# ---------------------------------------------------------------- renderer


@pytest.mark.parametrize("class_id", range(len(CLASSES)))
@pytest.mark.parametrize("angle", [0.0, 0.7, 2.9])
def test_single_shape_box_is_the_painted_pixel_extent(class_id, angle):
    background = flat()
    image, labels = compose(background, [shape(class_id, (150.3, 110.6), 90, angle, shading=40)])
    painted = (image != background).any(axis=2)
    assert len(labels) == 1
    assert labels[0].class_id == class_id
    assert labels[0].box == pixel_extent(painted)
    assert labels[0].visible == pytest.approx(1.0)


def test_shape_off_the_frame_edge_is_boxed_inside_the_frame():
    background = flat()
    image, labels = compose(background, [shape(1, (10, 120), 100, 0.0)])  # half outside on the left
    (label,) = labels
    assert label.box == pixel_extent((image != background).any(axis=2))
    assert label.box[0] == 0.0
    assert 0.4 < label.visible < 0.65


def test_mostly_hidden_shapes_lose_their_label():
    background = flat()
    outside = shape(0, (-30, 120), 80)  # 25% inside the frame
    hidden = shape(2, (200, 120), 60, color=(0, 0, 255))
    cover = shape(1, (200, 120), 150, 0.0, color=(255, 0, 0))  # painted later, on top
    _, labels = compose(background, [outside, hidden, cover])
    assert [label.class_id for label in labels] == [1]


def test_partly_covered_shape_is_boxed_by_its_visible_pixels():
    background = flat()
    star = shape(3, (160, 120), 120, 0.2, color=(0, 0, 255))
    cover = shape(1, (215, 120), 60, 0.0, color=(255, 0, 0))
    image, labels = compose(background, [star, cover])
    star_pixels = (image == (0, 0, 255)).all(axis=2)
    by_class = {label.class_id: label for label in labels}
    assert by_class[3].box == pixel_extent(star_pixels)
    assert by_class[3].visible < 0.99
    full_image, (full_star,) = compose(background, [star])
    assert by_class[3].box[2] < full_star.box[2]  # the right tip is hidden


def test_occluding_bars_hide_what_they_cross():
    background = flat()
    square = shape(1, (160, 120), 100, 0.0, color=(0, 0, 255))
    bar = (np.array([[100.0, 80.0], [220.0, 80.0]]), 12, (255, 255, 255))
    image, (label,) = compose(background, [square], [bar])
    assert label.box == pixel_extent((image == (0, 0, 255)).all(axis=2))
    assert label.box[1] > 86  # the top rows are under the bar


def test_scenes_are_reproducible_from_a_seed():
    first, first_labels = render_scene(np.random.default_rng(7))
    again, again_labels = render_scene(np.random.default_rng(7))
    other, _ = render_scene(np.random.default_rng(8))
    assert first.shape == (480, 640, 3)
    assert np.array_equal(first, again) and first_labels == again_labels
    assert not np.array_equal(first, other)


def test_scene_labels_are_inside_the_frame_and_sized_for_the_model():
    for seed in range(10):
        _, labels = render_scene(np.random.default_rng(seed))
        for label in labels:
            x1, y1, x2, y2 = label.box
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
            assert max(x2 - x1, y2 - y1) <= 160
            assert label.visible >= 0.4


# ---------------------------------------------------------------- dataset


def test_dataset_is_yolo_format_and_reproducible(tmp_path):
    first = write_dataset(tmp_path / "a", train=3, val=2, seed=5)
    second = write_dataset(tmp_path / "b", train=3, val=2, seed=5)
    spec = yaml.safe_load(first.read_text())
    assert Path(spec["path"]).is_absolute()
    assert [spec["names"][i] for i in range(len(CLASSES))] == list(CLASSES)
    for split, count in (("train", 3), ("val", 2)):
        images = sorted((tmp_path / "a" / "images" / split).glob("*.jpg"))
        labels = sorted((tmp_path / "a" / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == count
        assert [p.stem for p in images] == [p.stem for p in labels]
        for image, label in zip(images, labels):
            assert cv2.imread(str(image)).shape == (480, 640, 3)
            twin = tmp_path / "b" / label.relative_to(tmp_path / "a")
            assert label.read_text() == twin.read_text()
            for row in label.read_text().splitlines():
                class_id, *box = row.split()
                assert int(class_id) in range(len(CLASSES))
                assert all(0.0 <= float(v) <= 1.0 for v in box)
    assert second.read_text().replace("/b\n", "/a\n") == first.read_text()


def test_dataset_labels_read_back_to_the_rendered_boxes(tmp_path):
    from server.demo.dataset import image_rng

    write_dataset(tmp_path, train=0, val=2, seed=3)
    samples = labelled_images(val_images_dir(tmp_path / "data.yaml"))
    assert len(samples) == 2
    _, labels = render_scene(image_rng(3, "val", 1))
    truth = read_yolo_labels(samples[1].label, (480, 640))
    assert truth.class_ids.tolist() == [label.class_id for label in labels]
    np.testing.assert_allclose(truth.boxes, [label.box for label in labels], atol=1e-3)


# ---------------------------------------------------------------- video


def test_demo_video_has_the_requested_size_rate_and_length(tmp_path):
    path = write_demo_video(tmp_path / "demo.mp4", seconds=2, fps=10, size=(320, 240), seed=1)
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 20
    assert frames[0].shape == (240, 320, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 5  # things move


# ---------------------------------------------------------------- metrics


def dets(boxes, classes, scores=None) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes), np.float32) if scores is None else np.asarray(scores, np.float32)
    return Detections(boxes, scores, np.asarray(classes, np.int64))


TRUTH = dets([[10, 10, 50, 50], [100, 100, 160, 140]], [0, 1])


def test_iou_matrix_known_values():
    iou = iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]])


def test_perfect_predictions_score_one():
    result = mean_average_precision([TRUTH], [TRUTH])
    assert result.map50 == pytest.approx(1.0) and result.map50_95 == pytest.approx(1.0)
    # ultralytics' trapezoid integration caps a perfect curve at 0.995
    assert mean_average_precision([TRUTH], [TRUTH], "ultralytics").map50 == pytest.approx(0.995)


def test_shifted_boxes_pass_only_the_thresholds_their_iou_reaches():
    shifted = dets(TRUTH.boxes + np.float32([5, 0, 5, 0]), TRUTH.class_ids)
    # IoU 35/45 = 0.78 passes 0.50..0.75 (6 of 10); IoU 55/65 = 0.85 passes 0.50..0.80 (7 of 10)
    result = mean_average_precision([shifted], [TRUTH])
    assert result.map50 == pytest.approx(1.0)
    assert result.map50_95 == pytest.approx((0.6 + 0.7) / 2)


def test_wrong_class_and_duplicates():
    wrong = dets(TRUTH.boxes, [1, 0])
    assert map50([wrong], [TRUTH]) == 0.0
    one = dets([[10, 10, 50, 50]], [0])
    late_duplicate = dets([[10, 10, 50, 50], [11, 10, 50, 50]], [0, 0], [0.9, 0.5])
    early_duplicate = dets([[10, 10, 50, 50], [11, 10, 50, 50]], [0, 0], [0.5, 0.9])
    assert map50([late_duplicate], [one]) == pytest.approx(1.0)
    # The duplicate ranked first takes the target; the better box becomes a false positive: one TP, recall 1.
    assert map50([early_duplicate], [one]) == pytest.approx(1.0)
    miss_first = dets([[200, 200, 240, 240], [10, 10, 50, 50]], [0, 0], [0.9, 0.5])
    assert map50([miss_first], [one]) == pytest.approx(0.5)


def test_matching_is_per_image_and_greedy_by_confidence():
    predicted = dets([[10, 10, 50, 50], [12, 10, 52, 50]], [0, 0], [0.4, 0.8])
    truth = dets([[12, 10, 52, 50]], [0])
    correct = match_detections(predicted, truth)
    assert correct[1].all() and not correct[0].any()  # the confident one claims the target
    images = mean_average_precision([dets([], []), TRUTH], [TRUTH, TRUTH])
    # half the targets are never found, all found ones are right: precision 1 up to recall 0.5
    assert images.map50 == pytest.approx(51 / 101)


def test_empty_cases():
    assert map50([dets([], [])], [TRUTH]) == 0.0
    assert math.isnan(map50([TRUTH], [dets([], [])]))
    assert math.isnan(map50([dets([], [])], [dets([], [])]))
    assert math.isnan(map50([], []))


# ---------------------------------------------------------------- the committed demo model


def one_of_each_class() -> tuple[np.ndarray, list]:
    noise = np.random.default_rng(0).integers(60, 140, (480, 640, 3), np.uint8)
    background = cv2.GaussianBlur(noise, (0, 0), 8)
    colors = [(40, 40, 230), (230, 80, 40), (40, 200, 60), (0, 220, 240), (200, 60, 200)]
    shapes = [
        shape(c, (90 + 115 * c, 150 + 180 * (c % 2)), 95, 0.25 * c, colors[c], shading=30)
        for c in range(len(CLASSES))
    ]
    return compose(background, shapes)


@pytest.mark.parametrize("imgsz", [320, 640])
def test_demo_model_finds_every_shape_class(imgsz):
    frame, labels = one_of_each_class()
    assert sorted(label.class_id for label in labels) == list(range(len(CLASSES)))
    found = Detector(DEMO_ONNX, threads=2).detect(frame, imgsz, conf=0.25, iou=0.7)
    for label in labels:
        same_class = found.boxes[found.class_ids == label.class_id]
        assert len(same_class), f"no {CLASSES[label.class_id]} found at {imgsz}"
        assert iou_matrix([label.box], same_class).max() > 0.7, CLASSES[label.class_id]


def test_demo_model_scores_well_on_fresh_val_images(tmp_path):
    write_dataset(tmp_path, train=0, val=8, seed=123)
    samples = labelled_images(val_images_dir(tmp_path / "data.yaml"))
    result, _ = evaluate_model(DEMO_ONNX, samples, imgsz=320, threads=2)
    assert result.targets > 20
    assert result.map50 > 0.8
