"""The tuning's time left comes from the work it measured, not from counting steps as equal."""

from __future__ import annotations

from server.models.tuning.progress import TIMING, Steps


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_left_weighs_each_step_by_what_its_kind_took_and_timing_by_inference_times():
    clock, said = Clock(), []
    steps = Steps(["prepare", "quantize", "agreement", "quantize", "agreement", TIMING, "save"],
                  lambda stage, progress, message: said.append((progress, message)), clock=clock)
    clock.now = 2.0
    steps.finish()  # prepare: 2 s
    clock.now = 12.0
    steps.finish()  # quantize: 10 s
    steps.inference_s = {"fp32": 0.05, "first": 0.02}
    steps.timing_inferences = 5 * 13
    clock.now = 14.0
    steps.finish()  # agreement: 2 s
    # Left: the second quantize (10 s) and agreement (2 s); timing: 65 inferences of fp32, the first recipe and
    # the second (not measured yet: as the mean measured, 0.035 s); save: as the mean step, 14 / 3 s.
    timing = 65 * (0.05 + 0.02 + 0.035)
    assert abs(steps.seconds_left() - (10 + 2 + timing + 14 / 3)) < 1e-6
    # Counting steps as equal would have said 14 s x 4 / 3 = 18.7 s; the timing alone takes 6.8 s more.
    steps.report("quantizing", "quantizing with the second recipe")
    progress, message = said[-1]
    assert abs(progress - 14 / (14 + steps.seconds_left())) < 1e-6
    assert message.startswith("step 4/7: quantizing with the second recipe (about 2") and message.endswith(" s left)")


def test_a_step_slower_than_its_kind_is_judged_by_its_own_pace():
    clock = Clock()
    steps = Steps(["quantize", "quantize"], None, clock=clock)
    clock.now = 10.0
    steps.finish()
    clock.now = 40.0  # 30 s into the second, a quarter done: 90 s left, not "at least 0"
    assert abs(steps.seconds_left(0.25) - 90.0) < 1e-6


def test_steps_planned_later_go_before_the_timing():
    steps = Steps(["prepare", "engines", TIMING, "save"], None)
    steps.add_before(TIMING, ["load", "agreement"])
    assert steps.plan == ["prepare", "engines", "load", "agreement", TIMING, "save"]


def test_progress_never_goes_back_when_the_estimate_of_the_rest_grows():
    clock, said = Clock(), []
    steps = Steps(["quantize", "quantize", TIMING], lambda stage, progress, message: said.append(progress), clock=clock)
    clock.now = 1.0
    steps.finish()
    steps.report("quantizing", "second")  # 1 s done, about 1 + 1 left: 1/3
    steps.inference_s, steps.timing_inferences = {"fp32": 1.0}, 100  # the timing turns out to take 100 s
    clock.now = 2.0
    steps.finish()
    steps.report("timing", "round 1")  # 2 s done, about 100 s left: 2/102 < 1/3
    assert said[0] == said[1] and abs(said[0] - 1 / 3) < 1e-6
