"""An int8 verdict that holds: enough reference boxes or score maps, consistent timing, noise."""

from __future__ import annotations

import numpy as np
import pytest

from server.jobs import JobBoard, eta_seconds
from server.models.tuning.judging import (
    MIN_REFERENCE_BOXES,
    SCORE_MAP,
    HeldBack,
    TuneRow,
    agreement,
    choose,
    collect_held_back,
    score_map_agreement,
    timing_rows,
)
from server.vision import processing

ROWS = 6  # 4 box rows + 2 classes


class FakeReference:
    """A "detector" whose output puts boxes_per_frame confident boxes on every frame, far apart."""

    input_name = "images"

    def __init__(self, boxes_per_frame: int, score: float = 0.9):
        self.boxes_per_frame, self.score = boxes_per_frame, score
        self.calls = 0

    def input_hw(self, frame_hw, imgsz):
        return processing.input_shape_for(frame_hw, imgsz)

    def infer(self, tensor):
        self.calls += 1
        output = np.zeros((1, ROWS, 100), np.float32)
        for i in range(self.boxes_per_frame):
            output[0, :4, i] = [20 + 30 * (i % 10), 20 + 30 * (i // 10), 20, 20]
            output[0, 4, i] = self.score
        return output


def frames(count: int) -> list[np.ndarray]:
    return [np.zeros((320, 320, 3), np.uint8) for _ in range(count)]


def test_held_back_frames_are_added_until_fp32_has_enough_boxes():
    reference = FakeReference(boxes_per_frame=7)
    held = collect_held_back(reference, frames(40), 320)
    assert held.method == "map50" and held.conf == 0.25
    assert held.reference_boxes() >= MIN_REFERENCE_BOXES
    assert len(held.tensors) == 8 == reference.calls  # 8 x 7 = 56 boxes: no frame more than needed


def test_too_few_boxes_even_at_a_lower_conf_falls_back_to_score_maps():
    held = collect_held_back(FakeReference(boxes_per_frame=1), frames(12), 320)
    assert held.method == SCORE_MAP and len(held.tensors) == 12  # every frame of the pool was tried
    low = collect_held_back(FakeReference(boxes_per_frame=7, score=0.15), frames(40), 320)
    assert low.method == "map50" and low.conf == 0.1  # enough only at a lower confidence


def test_score_map_agreement_measures_how_much_score_mass_moved():
    reference = FakeReference(5).infer(None)
    assert score_map_agreement([reference], [reference]) == 1.0
    lowered = reference.copy()
    lowered[0, 4:] *= 0.8
    assert score_map_agreement([lowered], [reference]) == pytest.approx(0.8)
    assert score_map_agreement([np.zeros_like(reference)], [reference]) == 0.0
    held = HeldBack((320, 320), [None], [processing.Letterbox(1.0, 0, 0)], [reference], method=SCORE_MAP)
    assert agreement([lowered], held) == pytest.approx(0.8)


def test_the_speedup_shown_is_computed_from_the_milliseconds_shown():
    # rounds x (fp32, a, b): a is faster but noisy, b steady
    medians = np.array([[70.0, 48.0, 51.0], [72.0, 40.0, 52.0], [71.0, 60.0, 51.5], [69.0, 45.0, 51.0],
                        [71.5, 55.0, 52.5]])
    fp32_ms, rows = timing_rows(medians)
    assert fp32_ms == 71.0
    for ms, speedup, noise in rows:
        assert speedup == pytest.approx(fp32_ms / ms, abs=1e-3)
        assert noise > 0
    (a_ms, a_speedup, a_noise), (b_ms, b_speedup, b_noise) = rows
    assert a_ms < b_ms and a_noise > b_noise
    # a looks faster, but not by more than its noise: the more accurate b is kept.
    a = TuneRow("a", a_ms, a_speedup, 0.95, noise=a_noise)
    b = TuneRow("b", b_ms, b_speedup, 0.99, noise=b_noise)
    assert choose([a, b], 0.9) == (b, True)


def test_job_progress_carries_an_estimate_of_the_time_left(monkeypatch):
    assert eta_seconds(10.0, 0.25) == 30.0
    assert eta_seconds(0.5, 0.5) is None and eta_seconds(10.0, 0.01) is None  # too early to tell
    clock = iter([100.0, 120.0])
    monkeypatch.setattr("server.jobs.time.monotonic", lambda: next(clock))
    board = JobBoard()
    board.begin("engine-timing")
    board.update("engine-timing", "calibrating", 0.5, "step 3/9: calibrating")
    assert board.current()["eta_s"] == 20.0
