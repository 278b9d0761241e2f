"""Judge keyframes by what the viewer sees: every displayed frame's boxes against every-frame ONNX Runtime fp32.

    python -m bench.keyframes_eval [--video V] [--model M.pt|M.onnx] [--imgsz 640] [--every 1 2 3 auto]
        [--engine onnxruntime --precision fp32] [--threads 2] [--frames N] [--still] [--export]

For each detect_every, interpolated (the files default) and tracked (interpolate: never), the frames go through the
server's own Keyframer and FramePipeline (the stream's and the export's path; drawing and encoding left out) and
the tool prints, over the whole video: mAP50 (conf 0.25; truth: every-frame fp32 at imgsz), mean per-frame F1 at
IoU 0.5 (same class), the boxes missed (FN: shown late or not at all) and extra (FP: hanging or misplaced), network
runs per displayed frame, and the detect half's ms per frame. Defaults: the demo video (generated) and demo model.
--still writes a still scene (a fixed camera's view with sensor noise, nothing moving, then a shape entering) and
prints network runs per frame while still and how long after it entered the entering shape is boxed.
--export times whole exports (decode to written WebM) at detect_every 1 and 3 in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from server.demo.shapes import Shape, compose, random_background, sensor_noise
from server.demo.video import write_demo_video
from server.models.convert import convert_to_onnx
from server.models.runtime import ModelRuntime
from server.storage import DiskSpace
from server.vision.export import export_video
from server.vision.keyframer import Keyframer
from server.vision.metrics import map50, match_detections
from server.vision.pipeline import STAGES, FramePipeline
from server.vision.processing import Detections
from server.vision.settings import Settings
from server.vision.sources import probe_video
from server.vision.sources.base import Frame
from server.vision.tracker import Tracker

logger = logging.getLogger(__name__)

DEMO_MODEL = Path(__file__).resolve().parent.parent / "server" / "demo" / "model" / "shapes-yolov8n.onnx"
F1_IOU = np.array([0.5])
STILL_SECONDS, STILL_FPS = 60.0, 25.0
CEILING_SCORE_BINS = (0.35, 0.45, 0.6, 0.8)  # the ceiling's score bins (above the 0.25 confidence threshold)
ENTER_SPEED = 150.0  # px per second: the entering shape's speed


@dataclass(frozen=True)
class Run:
    """What a variant showed on every frame, and what it cost."""

    detections: list[Detections]
    detected: list[bool]  # per frame: did the network run on it
    detect_ms: dict[str, float]  # per stage, mean per displayed frame
    ran: str  # the engine and precision that ran last (a missing NCNN build would fall back to ONNX Runtime)

    def network_per_frame(self, frames: slice = slice(None)) -> float:
        flags = self.detected[frames]
        return sum(flags) / len(flags)


def frames_of(video: Path, limit: int | None, skip: int = 0):
    """Yield the video's frames as the file source numbers them (from frame `skip` on, numbered from 0)."""
    capture = cv2.VideoCapture(str(video))
    index = 0
    while (limit is None or index < limit + skip) and (read := capture.read())[0]:
        if index >= skip:
            yield Frame(index - skip, read[1], 0.0, index - skip)
        index += 1
    capture.release()


def run(video: Path, runtime: ModelRuntime, settings: Settings, limit: int | None, fps: float, skip: int = 0) -> Run:
    """Every frame of video (from frame skip on) through a Keyframer, as the stream (flat out) and the export see it."""
    pipeline = FramePipeline(runtime.detector_for, [], tracker_factory=Tracker)
    keyframer = Keyframer(pipeline, fps)
    shown = []
    for frame in frames_of(video, limit, skip):
        shown.extend(keyframer.push(frame, settings))
    shown.extend(keyframer.flush(settings))
    assert [item.frame.index for item in shown] == list(range(len(shown))), "frames came out of order"
    totals = {stage: sum(item.timings_ms.get(stage, 0.0) for item in shown) / len(shown) for stage in STAGES[1:5]}
    return Run([item.detections for item in shown], [item.detected for item in shown], totals,
               f"{pipeline.engine} {pipeline.precision}")


def frame_f1(predicted: Detections, truth: Detections) -> tuple[float, int, int]:
    """F1 of one frame at IoU 0.5 (1.0 when both are empty), and its false positives and false negatives."""
    hits = int(match_detections(predicted, truth, F1_IOU).sum())
    extra, missed = len(predicted) - hits, len(truth) - hits
    return (1.0 if hits + extra + missed == 0 else 2 * hits / (2 * hits + extra + missed)), extra, missed


def agreement(shown: list[Detections], truth: list[Detections]) -> dict:
    """mAP50 and mean per-frame F1 of what was shown against the truth, with the boxes extra and missed."""
    per_frame = [frame_f1(p, t) for p, t in zip(shown, truth, strict=True)]
    return {"map50": map50(shown, truth), "f1": float(np.mean([f for f, _, _ in per_frame])),
            "fp": sum(e for _, e, _ in per_frame), "fn": sum(m for _, _, m in per_frame)}


def track_ids(detections: Detections) -> list[int]:
    if detections.track_ids is None:
        raise ValueError("the truth must come through the tracker (its ids say which box is which object)")
    return detections.track_ids.tolist()


def gaps(truth: list[Detections], every: int):
    """Each frame between keyframes: (its place after the earlier keyframe, its track ids, the earlier keyframe's
    {id: score}, the later one's)."""
    last = len(truth) - 1
    for t, shown in enumerate(truth):
        a = t - t % every
        b = min(a + every, last)
        if t not in (a, b):
            keyed = [dict(zip(track_ids(truth[i]), truth[i].scores.tolist())) for i in (a, b)]
            yield t - a, set(track_ids(shown)), keyed[0], keyed[1]


def one_key_rule(truth: list[Detections], every: int) -> dict[tuple[int, bool, int], bool]:
    """The best show/hide choice for objects on one keyframe only, per (place in the gap, on the later keyframe,
    score bin): shown when the truth shows such objects there more often than not (measured on the truth itself)."""
    seen: dict[tuple[int, bool, int], list[int]] = {}
    for place, now, before, after in gaps(truth, every):
        for later, mine, other in ((False, before, after), (True, after, before)):
            for track, score in mine.items():
                if track not in other:
                    counts = seen.setdefault((place, later, score_bin(score)), [0, 0])
                    counts[0] += 1
                    counts[1] += track in now
    return {key: 2 * present > total for key, (total, present) in seen.items()}


def score_bin(score: float) -> int:
    return int(np.searchsorted(CEILING_SCORE_BINS, score, side="right"))


def ceiling(truth: list[Detections], every: int, guess_one_key: bool = False) -> float:
    """Mean per-frame F1 that no method seeing only every `every`-th frame's detections can beat.

    On a frame t between keyframes a and b, an object the truth shows at t but at neither keyframe cannot be known
    (a miss whatever is shown), and one it shows at both keyframes but not at t (it flickered off) cannot be known
    to be gone. Objects are the truth's own every-frame tracks (Tracker ids); keyframes score 1. Id switches of the
    tracker count as flicker. With guess_one_key, an object on one keyframe only is shown or not by the best rule
    per place in the gap and score bin that the truth's own rates give (one_key_rule), and scored by what the truth
    shows: the ceiling of a rule that decides from the keyframes' boxes, scores and the frame's place, knowing the
    video's odds (a method that looks at the frame itself, such as optical flow, is not bounded by it).
    """
    rule = one_key_rule(truth, every) if guess_one_key else {}
    scores = []
    for place, now, before, after in gaps(truth, every):
        misses, extras = len(now - before.keys() - after.keys()), len((before.keys() & after.keys()) - now)
        for later, mine, other in ((False, before, after), (True, after, before)):
            for track, score in mine.items():
                if track in other or not guess_one_key:
                    continue
                shown = rule[(place, later, score_bin(score))]
                misses += not shown and track in now
                extras += shown and track not in now
        hits = len(now) - misses
        total = 2 * hits + misses + extras
        scores.append(1.0 if total == 0 else 2 * hits / total)
    keyframes = len(truth) - len(scores)  # they score 1
    return float((keyframes + sum(scores)) / len(truth))


def onnx_for(model: Path, folder: Path, imgsz: int) -> Path:
    """The model as ONNX in folder (a .pt through the server's converter), so NCNN files land there too."""
    target = folder / (model.stem + ".onnx")
    if model.suffix == ".pt":
        convert_to_onnx(model, target, imgsz=imgsz)
    else:
        shutil.copy(model, target)
    return target


def print_row(name: str, result: Run, scores: dict) -> None:
    stages = " ".join(f"{stage} {ms:5.1f}" for stage, ms in result.detect_ms.items())
    print(f"{name:<24} {result.ran:<17} mAP50 {scores['map50']:.3f}  F1 {scores['f1']:.3f}  FP {scores['fp']:5d}  FN {scores['fn']:5d}"
          f"  net/frame {result.network_per_frame():.3f}  ms/frame: {stages}", flush=True)


def compare(video: Path, runtime: ModelRuntime, base: Settings, everies: list, limit: int | None) -> None:
    """Print one row per detect_every x (interpolated, tracked) against every-frame fp32."""
    fps = probe_video(video).fps
    reference = dataclasses.replace(base, engine="onnxruntime", precision="fp32", detect_every=1)
    truth = run(video, runtime, reference, limit, fps)
    print(f"{video.name}: {len(truth.detections)} frames at {fps:g} fps, truth: every-frame onnxruntime fp32 "
          f"at {base.imgsz}, {sum(len(d) for d in truth.detections)} boxes; rows: {base.engine} {base.precision}")
    # The floor: how well the truth agrees with itself one frame later (low-confidence boxes come and go).
    floor = agreement(truth.detections[:-1], truth.detections[1:])
    print(f"{'truth one frame late':<42} mAP50 {floor['map50']:.3f}  F1 {floor['f1']:.3f}  FP {floor['fp']:5d}  "
          f"FN {floor['fn']:5d}", flush=True)
    for every in (e for e in everies if isinstance(e, int) and e > 1):
        print(f"{f'ceiling every {every}':<42} F1 {ceiling(truth.detections, every):.3f} (objects the truth shows "
              f"between keyframes only, or hides there only, lost); F1 "
              f"{ceiling(truth.detections, every, guess_one_key=True):.3f} (objects on one keyframe only shown by "
              f"the best rule per score bin)", flush=True)
    for every in everies:
        for interpolate in (("files",) if every == 1 else ("files", "never")):
            settings = dataclasses.replace(base, detect_every=every, interpolate=interpolate)
            result = run(video, runtime, settings, limit, fps)
            mode = "" if every == 1 else (" interpolated" if interpolate == "files" else " tracked")
            print_row(f"every {every}{mode}", result, agreement(result.detections, truth.detections))


def write_still_scene(path: Path, seconds: float = STILL_SECONDS, fps: float = STILL_FPS,
                      size: tuple[int, int] = (640, 480), seed: int = 3) -> int:
    """Write a fixed camera's view with sensor noise and two still shapes, then a shape entering from the left.

    Returns the first frame the entering shape shows on.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    background = random_background(rng, (height, width))
    still = [Shape(1, (420.0, 150.0), 90.0, 0.3, (40, 40, 230), 20.0), Shape(2, (520.0, 360.0), 80.0, 0.0,
                                                                            (230, 60, 40), 10.0)]
    scene, _ = compose(background, still)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    entering_size, entered = 100.0, int(seconds * fps)
    for index in range(entered + int(3 * fps)):
        image = scene
        if index >= entered:
            x = -entering_size / 2 + ENTER_SPEED * (index - entered) / fps
            image, _ = compose(scene, [Shape(0, (x, 240.0), entering_size, 0.0, (30, 220, 230), 10.0)])
        writer.write(sensor_noise(rng, image))
    writer.release()
    return entered


def first_boxed(shown: list[Detections], start: int, near_x: float) -> int | None:
    """The first frame from start on with a box whose left edge is near the frame's left (the entering shape)."""
    for index in range(start, len(shown)):
        if any(box[0] < near_x for box in shown[index].boxes):
            return index
    return None


def still_scene(folder: Path, runtime: ModelRuntime, base: Settings) -> None:
    """Network runs per frame on a still scene, and the delay until an entering shape is boxed."""
    video = folder / "still.mp4"
    entered = write_still_scene(video)
    for every in (1, "auto"):
        # Every frame runs the network anyway: its row needs only the last still second and the entry.
        skip = entered - int(STILL_FPS) if every == 1 else 0
        settings = dataclasses.replace(base, detect_every=every)
        started = time.perf_counter()
        result = run(video, runtime, settings, None, STILL_FPS, skip)
        seconds = time.perf_counter() - started
        while_still = result.detections[:entered - skip]
        boxed = first_boxed(result.detections, entered - skip, near_x=60.0)
        delay = "never" if boxed is None else f"{(boxed + skip - entered) / STILL_FPS:.2f} s after it entered"
        print(f"still scene, every {every}: {result.network_per_frame(slice(0, entered - skip)):.4f} network runs per "
              f"frame over {entered - skip} still frames ({len(while_still[-1])} boxes on the last), entering shape boxed "
              f"{delay}; {result.network_per_frame():.3f} overall, {len(result.detections) / seconds:.1f} frames/s, "
              f"detect half ms/frame {sum(result.detect_ms.values()):.2f}", flush=True)


class TimedPipeline(FramePipeline):
    """The export's pipeline, keeping every rendered frame's stage times (the writer thread's are not among them)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.timings: list[dict[str, float]] = []

    def render(self, item, settings, fps=None):
        result = super().render(item, settings, fps)
        self.timings.append(result.timings_ms)
        return result


def export_speeds(video: Path, runtime: ModelRuntime, base: Settings, folder: Path) -> None:
    """Whole exports at detect_every 1 and 3, one after the other in the same run, with their stage times."""
    info = probe_video(video)
    space = DiskSpace(folder, 0)
    for every in (1, 3):
        settings = dataclasses.replace(base, detect_every=every)
        pipeline = TimedPipeline(runtime.detector_for, [], tracker_factory=Tracker)
        result = export_video(video, info, pipeline, settings, folder / f"out{every}.webm",
                              folder / f"out{every}.csv", space, threading.Event())
        stages = " ".join(f"{stage} {np.mean([t[stage] for t in pipeline.timings]):.1f}" for stage in STAGES)
        print(f"export every {every}: {result.frames} frames in {result.seconds:.1f} s, {result.fps:.2f} fps; "
              f"ms per frame: {stages} (the writer's JPEG decode and VP8 encode run beside)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="a video (default: the demo video, generated)")
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help=".pt or .onnx (default: the demo model)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--every", nargs="+", default=["1", "2", "3", "auto"])
    parser.add_argument("--engine", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, help="the first N frames only (default: the whole video)")
    parser.add_argument("--still", action="store_true", help="also the still scene")
    parser.add_argument("--export", action="store_true", help="also time exports at detect_every 1 and 3")
    parser.add_argument("--no-compare", action="store_true", help="skip the agreement rows")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    everies = [e if e == "auto" else int(e) for e in args.every]
    base = Settings(imgsz=args.imgsz, engine=args.engine, precision=args.precision, threads=args.threads,
                    realtime=False, loop=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video = args.video or write_demo_video(folder / "demo.mp4")
        runtime = ModelRuntime(onnx_for(args.model, folder, args.imgsz), lambda: None, keep=2)
        if not args.no_compare:
            compare(video, runtime, base, everies, args.frames)
        if args.still:
            still_scene(folder, runtime, base)
        if args.export:
            export_speeds(video, runtime, base, folder)


if __name__ == "__main__":
    main()
