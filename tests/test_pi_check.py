"""The aarch64 check's own parts (.ci/pi): it must tell frames apart and see a box that differs."""

from __future__ import annotations

import copy
import subprocess

import cv2
import numpy as np
import pytest

from server.config import REPO_ROOT
from tests.support.ci_check import check_module

drive = check_module("drive")

BOXES = {"boxes": [[10.0, 20.0, 110.0, 140.0], [200.0, 50.0, 260.0, 90.0]], "scores": [0.91, 0.6], "classes": [0, 3]}


@pytest.mark.parametrize("number", [0, 1, 5, 170, 255])
def test_a_frame_number_survives_jpeg(number):
    image = np.random.default_rng(number).integers(0, 256, (480, 640, 3), np.uint8)
    drive.paint_number(image, number)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert ok and drive.read_number(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)) == number


def test_the_check_video_is_lossless_and_numbered(tmp_path):
    path = drive.write_video(tmp_path / "check.mkv", frames=3)
    capture = cv2.VideoCapture(str(path))
    numbers = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        numbers.append(drive.read_number(image))
    capture.release()
    assert numbers == [0, 1, 2]


def test_boxes_within_the_tolerance_match():
    moved = copy.deepcopy(BOXES)
    moved["boxes"][0][0] += 0.1
    moved["scores"][1] += 0.01
    problems, px, score = drive.match_boxes(BOXES, moved, conf=0.25)
    assert not problems and px == pytest.approx(0.1) and score == pytest.approx(0.01)


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f["boxes"][0].__setitem__(2, f["boxes"][0][2] + 2.0),  # an edge 2 px off
        lambda f: f["classes"].__setitem__(1, 4),  # another class
        lambda f: [f[key].pop() for key in ("boxes", "scores", "classes")],  # a box missing
        lambda f: [f[key].append(value) for key, value in zip(("boxes", "scores", "classes"), ([0, 0, 9, 9], 0.7, 1))],
        lambda f: f["scores"].__setitem__(0, 0.85),  # a score off by 0.06
    ],
    ids=["moved", "class", "missing", "extra", "score"],
)
def test_boxes_that_differ_are_reported(change):
    other = copy.deepcopy(BOXES)
    change(other)
    problems, _, _ = drive.match_boxes(BOXES, other, conf=0.25)
    assert problems


def test_a_box_at_the_threshold_may_fall_either_side():
    """Rounding can put a box scored at the confidence threshold on either side of it on the other CPU."""
    edge = copy.deepcopy(BOXES)
    for key, value in zip(("boxes", "scores", "classes"), ([300, 300, 340, 350], 0.255, 2)):
        edge[key].append(value)
    assert drive.match_boxes(BOXES, edge, conf=0.25)[0] == []
    assert drive.match_boxes(edge, BOXES, conf=0.25)[0] == []


def test_the_picture_comparison_sees_a_box_drawn_elsewhere():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), np.uint8)
    first, second, shifted = image.copy(), image.copy(), image.copy()
    cv2.rectangle(first, (100, 100), (300, 250), (0, 0, 255), 2)
    cv2.rectangle(second, (100, 100), (300, 250), (0, 0, 255), 2)
    cv2.rectangle(shifted, (104, 100), (304, 250), (0, 0, 255), 2)
    assert drive.differing_pixels(first, second) == 0
    assert drive.differing_pixels(first, shifted) > 400


def test_the_shell_scripts_parse():
    for script in (".ci/pi/check.sh", ".ci/pi/pi-root.sh", ".ci/run"):
        subprocess.run(["bash", "-n", str(REPO_ROOT / script)], check=True)


def test_the_graph_comparison_ignores_the_date_and_sees_one_weight_changed():
    import onnx
    from onnx import numpy_helper

    model = onnx.load(REPO_ROOT / "server/demo/model/shapes-yolov8n.onnx")
    stamped = copy.deepcopy(model)
    stamped.metadata_props.add(key="date", value="2026-12-01T00:00:00")
    assert drive.graph_differences(model, stamped) == []
    changed = copy.deepcopy(model)
    weight = changed.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = np.nextafter(values.flat[0], np.float32(np.inf))  # one ulp
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    assert drive.graph_differences(model, changed) != []
