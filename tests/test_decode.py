"""processing.decode picks the best class before transposing: same answers as transposing everything first."""

from __future__ import annotations

import numpy as np
import pytest

from server.vision import processing


def decode_transposed(output, conf, classes=None):
    """The straightforward decode (the previous implementation): transpose every anchor, then pick classes."""
    predictions = output[0].T
    class_scores = predictions[:, 4:]
    if classes is not None:
        mask = np.full(class_scores.shape[1], -1.0, np.float32)
        mask[[c for c in classes if 0 <= c < len(mask)]] = 0.0
        class_scores = class_scores + mask
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(class_ids)), class_ids]
    keep = scores > conf
    xywh, scores, class_ids = predictions[keep, :4], scores[keep], class_ids[keep]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32), class_ids.astype(np.int64)


def yolo_like_output(anchors: int, classes: int, hot: int, seed: int) -> np.ndarray:
    """Mostly low scores, a few confident anchors, as a trained model's output looks."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 0.3, (classes, anchors))
    scores[rng.integers(0, classes, hot), rng.choice(anchors, hot, replace=False)] = rng.uniform(0.2, 1.0, hot)
    boxes = rng.uniform(0, 640, (4, anchors))
    return np.concatenate([boxes, scores])[None].astype(np.float32)


@pytest.mark.parametrize("classes", [None, [0], [2, 5, 79], [7, 3, 3, 500], []])
@pytest.mark.parametrize("anchors, seed", [(8400, 0), (6300, 1), (2100, 2)])
def test_decode_matches_the_transposing_decode(anchors, seed, classes):
    output = yolo_like_output(anchors, 80, hot=60, seed=seed)
    expected = decode_transposed(output, 0.25, classes)
    got = processing.decode(output, 0.25, classes)
    assert len(got[0]) == len(expected[0])
    for ours, reference in zip(got, expected):
        assert ours.dtype == reference.dtype
        np.testing.assert_array_equal(ours, reference)


def test_decode_of_an_output_without_anchors_above_conf_is_empty():
    boxes, scores, class_ids = processing.decode(yolo_like_output(2100, 80, hot=0, seed=3), 0.5)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and class_ids.shape == (0,)
