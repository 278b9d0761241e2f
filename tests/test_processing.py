"""Pure pre/post-processing on arrays with known answers."""

import numpy as np
import pytest

from server.vision import processing
from server.vision.processing import Letterbox


@pytest.mark.parametrize(
    "frame_hw, imgsz, expected",
    [
        ((480, 640), 640, (480, 640)),  # aspect-true: not 640x640
        ((480, 640), 320, (256, 320)),  # 240 rounded up to a stride multiple
        ((720, 1280), 640, (384, 640)),
        ((1080, 1920), 416, (256, 416)),
        ((640, 480), 640, (640, 480)),  # portrait
        ((500, 500), 512, (512, 512)),
    ],
)
def test_input_shape_is_aspect_true(frame_hw, imgsz, expected):
    assert processing.input_shape_for(frame_hw, imgsz) == expected


def test_letterbox_pads_symmetrically_with_grey():
    image = np.full((240, 320, 3), 200, np.uint8)
    padded, box = processing.letterbox(image, (320, 320))
    assert padded.shape == (320, 320, 3)
    assert box == Letterbox(scale=1.0, pad_x=0.0, pad_y=40.0)
    assert (padded[:40] == processing.PAD_VALUE).all() and (padded[-40:] == processing.PAD_VALUE).all()
    assert (padded[40:280] == 200).all()


def test_to_tensor_is_rgb_chw_unit_range():
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    tensor = processing.to_tensor(image)
    assert tensor.shape == (1, 3, 2, 3) and tensor.dtype == np.float32
    assert tensor[0, 2].max() == 1.0 and tensor[0, 0].max() == 0.0


def _raw_output(rows: list[tuple[float, float, float, float, int, float]], nc: int = 3, anchors: int = 10):
    """Build a 1 x (4+nc) x anchors output with given (cx, cy, w, h, class, score) rows."""
    output = np.zeros((1, 4 + nc, anchors), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(rows):
        output[0, :4, i] = (cx, cy, w, h)
        output[0, 4 + cls, i] = score
    return output


def test_decode_converts_xywh_and_filters_by_confidence():
    output = _raw_output([(50, 50, 20, 10, 1, 0.9), (10, 10, 4, 4, 0, 0.1)])
    boxes, scores, classes = processing.decode(output, conf=0.25)
    np.testing.assert_allclose(boxes, [[40, 45, 60, 55]])
    np.testing.assert_allclose(scores, [0.9])
    assert classes.tolist() == [1]


def test_decode_class_filter_drops_other_classes():
    output = _raw_output([(50, 50, 20, 10, 1, 0.9), (80, 80, 10, 10, 2, 0.8)])
    _, _, classes = processing.decode(output, conf=0.25, classes=[2])
    assert classes.tolist() == [2]


def test_nms_suppresses_overlaps_within_a_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    keep = processing.nms(boxes, scores, classes, iou=0.5)
    assert keep.tolist() == [0, 2, 3]


def test_nms_respects_max_det_and_empty_input():
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(5)], np.float32)
    keep = processing.nms(boxes, np.linspace(1, 0.5, 5, dtype=np.float32), np.zeros(5, int), 0.5, max_det=2)
    assert keep.tolist() == [0, 1]
    assert processing.nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).size == 0


def test_postprocess_maps_boxes_back_to_the_frame():
    frame_hw = (240, 320)
    box = Letterbox(scale=2.0, pad_x=0.0, pad_y=80.0)  # 320x240 frame into a 640x640 input
    output = _raw_output([(320, 320, 200, 100, 0, 0.95)])
    detections = processing.postprocess(output, box, frame_hw, conf=0.25, iou=0.7)
    np.testing.assert_allclose(detections.boxes, [[110, 95, 210, 145]])
    assert len(detections) == 1


def test_scale_boxes_clips_to_the_frame():
    boxes = np.array([[-20, -20, 700, 500]], np.float32)
    scaled = processing.scale_boxes(boxes, Letterbox(1.0, 0.0, 0.0), (480, 640))
    np.testing.assert_allclose(scaled, [[0, 0, 640, 480]])
