"""Keyframes: interpolation between two keyframes (known answers), the motion rule, and the Keyframer on the demo model."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from harness.waiting import wait_for
from server.vision import keyframes, motion
from server.vision.keyframer import Keyframer, added_delay_frames
from server.vision.motion import Decision
from server.vision.pipeline import FramePipeline
from server.vision.processing import Detections
from server.vision.settings import Settings
from server.vision.sources import FrameSource
from server.vision.sources.base import Frame
from server.vision.tracker import Tracker
from tests.support.helpers import make_runner


def tracked(boxes, track_ids, class_ids=None, scores=None) -> Detections:
    count = len(track_ids)
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores if scores is not None else [0.9] * count, np.float32),
        np.array(class_ids if class_ids is not None else [0] * count, np.int64),
        np.array(track_ids, np.int64),
    )


def test_a_track_on_both_keyframes_moves_linearly_in_centre_and_size():
    before = tracked([[0, 0, 10, 10]], [1], scores=[0.5])
    after = tracked([[30, 60, 50, 100]], [1], scores=[0.8])
    # Centre (5, 5) -> (40, 80), size (10, 10) -> (20, 40): a third of the way is centre (16.67, 30), size (13.33, 20).
    third = keyframes.interpolate(before, after, 1 / 3)
    assert third.boxes[0] == pytest.approx([10.0, 20.0, 23.333, 40.0], abs=1e-3)
    assert third.scores[0] == pytest.approx(0.5) and third.track_ids.tolist() == [1]  # the nearer keyframe's
    two_thirds = keyframes.interpolate(before, after, 2 / 3)
    assert two_thirds.scores[0] == pytest.approx(0.8)
    assert two_thirds.boxes[0] == pytest.approx([20.0, 40.0, 36.667, 70.0], abs=1e-3)


def test_an_unsure_track_on_one_keyframe_only_shows_on_the_frames_nearer_to_it():
    unsure = keyframes.CONFIDENT_ALONE - 0.1
    before = tracked([[0, 0, 10, 10], [100, 100, 120, 120]], [1, 2], class_ids=[0, 3], scores=[0.9, unsure])  # 2 leaves
    after = tracked([[10, 0, 20, 10], [200, 0, 220, 30]], [1, 5], class_ids=[0, 4], scores=[0.9, unsure])  # 5 arrives
    shown = [keyframes.interpolate(before, after, t) for t in (0.25, 0.5, 0.75)]
    # at the midpoint neither keyframe is nearer: an unsure box is as likely gone as there, and is not shown
    assert [sorted(d.track_ids.tolist()) for d in shown] == [[1, 2], [1], [1, 5]]
    early = dict(zip(shown[0].track_ids.tolist(), shown[0].boxes.tolist()))
    assert early[2] == [100, 100, 120, 120] and shown[0].class_ids.tolist()[shown[0].track_ids.tolist().index(2)] == 3
    late = dict(zip(shown[2].track_ids.tolist(), shown[2].boxes.tolist()))
    assert late[5] == [200, 0, 220, 30] and late[1] == pytest.approx([7.5, 0, 17.5, 10])


def test_on_the_midpoint_a_confident_track_on_one_keyframe_only_is_shown_and_elsewhere_the_nearer_rule_holds():
    sure = keyframes.CONFIDENT_ALONE
    before = tracked([[0, 0, 10, 10], [100, 100, 120, 120]], [1, 2], class_ids=[0, 3], scores=[0.9, sure])
    after = tracked([[10, 0, 20, 10], [200, 0, 220, 30]], [1, 5], class_ids=[0, 4], scores=[0.9, sure])
    shown = {t: keyframes.interpolate(before, after, t) for t in (1 / 3, 0.5, 2 / 3)}
    assert [sorted(d.track_ids.tolist()) for d in shown.values()] == [[1, 2], [1, 2, 5], [1, 5]]
    middle = shown[0.5]
    by_track = dict(zip(middle.track_ids.tolist(), zip(middle.boxes.tolist(), middle.class_ids.tolist())))
    assert by_track[2] == ([100, 100, 120, 120], 3) and by_track[5] == ([200, 0, 220, 30], 4)


def test_between_places_each_frame_by_its_index():
    before, after = tracked([[0, 0, 10, 10]], [7]), tracked([[30, 0, 40, 10]], [7])
    boxes = [d.boxes[0, 0] for d in keyframes.between(before, 10, after, 13, [11, 12])]
    assert boxes == pytest.approx([10.0, 20.0])


def gray_with(noise_seed: int, square_at: tuple[int, int] | None = None) -> np.ndarray:
    """A 640x480 flat grey frame with sensor noise (sigma 6), and a bright square where asked."""
    rng = np.random.default_rng(noise_seed)
    image = np.clip(120 + rng.normal(0, 6, (480, 640, 3)), 0, 255).astype(np.uint8)
    if square_at is not None:
        x, y = square_at
        cv2.rectangle(image, (x, y), (x + 60, y + 60), (250, 250, 250), -1)
    return image


def test_sensor_noise_is_no_motion_and_a_new_object_is():
    still = motion.small_gray(gray_with(0))
    no_tracks = np.zeros(still.shape, bool)
    assert motion.decide(motion.changed_cells(still, motion.small_gray(gray_with(1))), no_tracks, 5, 60) \
        is Decision.STILL
    entered = motion.changed_cells(still, motion.small_gray(gray_with(2, (300, 200))))
    assert motion.decide(entered, no_tracks, 5, 60) is Decision.KEY
    # The same change inside a track's box is a tracked object moving: a keyframe every MOVING_EVERY frames.
    around = motion.track_mask(np.array([[290, 190, 370, 270]]), (480, 640), still.shape, 1)
    assert motion.decide(entered, around, 1, 60) is Decision.BETWEEN
    assert motion.decide(entered, around, motion.MOVING_EVERY, 60) is Decision.KEY
    assert motion.decide(motion.changed_cells(still, still), no_tracks, 60, 60) is Decision.KEY  # the ceiling


@pytest.fixture
def video_frames(make_video):
    capture = cv2.VideoCapture(str(make_video(width=320, height=240, frames=13)))
    frames = []
    while (read := capture.read())[0]:
        frames.append(Frame(len(frames), read[1], 0.0, len(frames)))
    return frames


def run(keyframer: Keyframer, frames: list[Frame], settings: Settings) -> list:
    out = []
    for frame in frames:
        out.extend(keyframer.push(frame, settings))
    return [*out, *keyframer.flush(settings)]


def test_keyframer_holds_at_most_n_minus_1_frames_and_interpolates_them(demo_detector, video_frames):
    settings = Settings(imgsz=320, detect_every=3)
    keyframer = Keyframer(FramePipeline(lambda s: demo_detector, ["c"] * 5, tracker_factory=Tracker), fps=15)
    out, most_held = [], 0
    for frame in video_frames:
        out.extend(keyframer.push(frame, settings))
        most_held = max(most_held, keyframer.held)
    out.extend(keyframer.flush(settings))
    assert most_held == 2 == added_delay_frames(settings, live=False)
    assert [item.frame.index for item in out] == list(range(13))
    assert [item.frame.index for item in out if item.detected] == [0, 3, 6, 9, 12]
    both = set(out[3].detections.track_ids.tolist()) & set(out[6].detections.track_ids.tolist())
    assert both, "the moving shapes keep their track ids from keyframe to keyframe"
    for track in both:
        at = {i: out[i].detections.boxes[out[i].detections.track_ids.tolist().index(track)] for i in (3, 4, 5, 6)}
        assert at[4] == pytest.approx(at[3] + (at[6] - at[3]) / 3, abs=1e-3)
        assert at[5] == pytest.approx(at[3] + (at[6] - at[3]) * 2 / 3, abs=1e-3)


def test_without_interpolation_nothing_waits_and_the_tracker_moves_the_boxes(demo_detector, video_frames):
    settings = Settings(imgsz=320, detect_every=3, interpolate="never")
    keyframer = Keyframer(FramePipeline(lambda s: demo_detector, ["c"] * 5, tracker_factory=Tracker), fps=15)
    for frame in video_frames:
        assert [item.frame.index for item in keyframer.push(frame, settings)] == [frame.index]
    live = dataclasses.replace(settings, interpolate="files")
    assert added_delay_frames(live, live=True) == 0 and added_delay_frames(live, live=False) == 2


def test_auto_runs_nothing_on_a_still_scene_and_boxes_what_enters(demo_detector):
    settings = Settings(imgsz=320, detect_every="auto")
    keyframer = Keyframer(FramePipeline(lambda s: demo_detector, ["c"] * 5, tracker_factory=Tracker), fps=15)
    still = [Frame(i, cv2.resize(gray_with(i), (320, 240)), 0.0, i) for i in range(20)]
    out = run(keyframer, still, settings)
    assert [item.frame.index for item in out if item.detected] == [0]
    entering = Frame(20, cv2.resize(gray_with(20, (300, 200)), (320, 240)), 0.0, 20)
    assert [item.detected for item in keyframer.push(entering, settings)] == [True]


class CameraLike:
    """A real FrameSource that says it paces itself, as a live camera does, and remembers the last frame read."""

    def __init__(self, path):
        self.inner = FrameSource(path, loop=False)
        self.fps, self.paces_itself, self.loop, self.last_read = self.inner.fps, True, False, -1

    def read(self, timeout: float):
        frame = self.inner.read(timeout)
        self.last_read = frame.index if frame is not None else self.last_read
        return frame

    def published(self, frame, published_at):
        self.inner.published(frame, published_at)

    def close(self):
        self.inner.close()


@pytest.mark.parametrize("interpolate, lag", [("files", 0), ("always", 2)])
def test_a_live_source_is_shown_n_minus_1_frames_late_only_when_interpolation_is_asked_for(
        make_video, demo_detector, interpolate, lag):
    camera = CameraLike(make_video(frames=15))
    shown = []  # (published frame, newest frame read then)
    runner, ended = make_runner(None, demo_detector, Settings(imgsz=320, detect_every=3, interpolate=interpolate,
                                                              threads=1), pipelined=False,
                                open_source=lambda loop: camera,
                                on_publish=lambda item, result, at: shown.append((item.frame.index, camera.last_read)))
    runner.start()
    assert wait_for(lambda: ended, timeout=60) and ended == [None]
    assert [index for index, _ in shown] == list(range(15))
    assert {read - index for index, read in shown if read < 14} == {lag}  # before the end drains what is held
    assert runner.stats.snapshot(0)["keyframes"]["interpolating"] is (lag > 0)


def test_a_looping_stream_shows_every_frame_once_in_order_across_the_loop(make_video, demo_detector):
    published = []
    runner, ended = make_runner(make_video(frames=11), demo_detector,
                                Settings(imgsz=320, detect_every=3, realtime=False, loop=True, threads=1),
                                on_publish=lambda item, result, at: published.append(item))
    runner.start()
    assert wait_for(lambda: len(published) >= 27, timeout=60)
    runner.stop()
    published = list(published)  # one look: a frame rendered as the stop came may still be appended
    assert [item.frame.index for item in published] == list(range(len(published)))
    assert [item.frame.position for item in published[:27]] == [*range(11), *range(11), *range(5)]
    # The frame held at the loop gets a keyframe of its own (the video's last), and the loop starts afresh.
    assert [item.frame.position for item in published[:27] if item.detected] == [0, 3, 6, 9, 10] * 2 + [0, 3]


def test_the_ceiling_counts_only_what_no_keyframe_shows_as_lost():
    from bench.keyframes_eval import ceiling

    def frame(*ids: int) -> Detections:
        boxes = np.array([[10.0 * i, 0, 10.0 * i + 8, 8] for i in ids], np.float32).reshape(-1, 4)
        return Detections(boxes, np.full(len(ids), 0.9, np.float32), np.zeros(len(ids), np.int64),
                          track_ids=np.array(ids, np.int64))

    # every 2: frame 1 shows object 2, which neither keyframe (0, 2) shows: one unknowable miss, F1 2/3
    assert ceiling([frame(1), frame(1, 2), frame(1)], 2) == pytest.approx((1 + 2 / 3 + 1) / 3)
    # object 2 flickers off on frame 1 while both keyframes show it: one unknowable extra box, F1 2/3
    assert ceiling([frame(1, 2), frame(1), frame(1, 2)], 2) == pytest.approx((1 + 2 / 3 + 1) / 3)
    # what a keyframe shows can be interpolated (arrivals, departures): no loss
    assert ceiling([frame(1), frame(1, 2), frame(2)], 2) == 1.0
    with pytest.raises(ValueError):
        ceiling([Detections(), Detections(), Detections()], 2)


def test_the_first_interpolated_frame_loads_nothing_more():
    """np.intersect1d's first call imported numpy.ma: 40 M instructions at a stream's first interpolated frame."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from server.vision import keyframes\n"
        "from server.vision.processing import Detections\n"
        "def det(ids):\n"
        "    n = len(ids)\n"
        "    return Detections(np.ones((n, 4), np.float32), np.full(n, 0.9, np.float32), np.zeros(n, np.int64),"
        " np.array(ids, np.int64))\n"
        "before = set(sys.modules)\n"
        "keyframes.interpolate(det([1, 2]), det([2, 3]), 0.5)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
