"""The program the meter counts inside the emulated Pi root: a video's frames through one pipeline, one thread.

    python guest.py ours --model M.onnx [--int8 M.int8.onnx] --video V --frames F --imgsz 640 --engine ort
                         --precision fp32 --detect-every 1|N|auto [--interpolate files|never]
    python guest.py ultralytics --model EXPORT --video V --frames F

`ours` runs this project's FramePipeline (the server's detect and render halves: preprocess, inference,
postprocess, tracker, drawing with the status line, JPEG) on frames decoded from the file, through the server's
Keyframer (which frames the network runs on; the others interpolated between keyframes as for a file, or
tracked), then publishes each JPEG to a FrameHub and records the stream's stats, as the server's producer does,
all on the main thread. The frames still held at the end become a keyframe, as at the end of a file.
`ultralytics` runs Ultralytics' predictor (predict(stream=True)) on its ONNX or NCNN export, then
results.plot() and JPEG encoding, as bench/fps/rows.py's peer (UltralyticsRun) does.

Each stage ends with a mark (bench/aarch64/stage_marks.c counts instructions up to it). The detections of every
frame go to stdout as one JSON object, for agreement. Run as a file (not as a module of the tools package) with
the root's python; ONE thread everywhere: ONNX Runtime intra/inter-op 1 without spinning, ncnn 1 thread,
OpenCV 1 thread, torch 1 thread (OMP_NUM_THREADS=1 comes from qemu-count.sh).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys

MARK_SYSCALL = 19777  # bench/aarch64/stage_marks.c
CODES = {
    "begin": 1, "decode": 2, "preprocess": 3, "inference": 4, "postprocess": 5, "track": 6, "draw": 7,
    "encode": 8, "publish": 9, "end": 10, "calibrate": 11,
}  # the same as counts.MARK_CODES (a test checks): this file imports nothing of the tools package
FONT_NAME = "DejaVuSans.ttf"  # as bench/fps/rows.py: ultralytics finds it in matplotlib instead of downloading
_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = (ctypes.c_long, ctypes.c_long)


def mark(stage: str) -> None:
    """Tell the counting plugin that a stage ended (an unknown syscall: ENOSYS, nothing else)."""
    _syscall(MARK_SYSCALL, CODES[stage])


def one_thread_runtimes() -> None:
    """Make every ONNX Runtime session and ncnn net (ours and Ultralytics') run on one thread, without spinning."""
    import cv2
    import onnxruntime as ort

    cv2.setNumThreads(1)

    class OneThreadSession(ort.InferenceSession):
        def __init__(self, path, sess_options=None, *args, **kwargs):
            options = sess_options or ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            super().__init__(path, options, *args, **kwargs)

    ort.InferenceSession = OneThreadSession
    try:
        import ncnn
    except ImportError:
        return

    class OneThreadNet(ncnn.Net):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.opt.num_threads = 1

    ncnn.Net = OneThreadNet


def calibrate() -> None:
    """Two marks in a row: what one mark costs, which the host subtracts from every stage."""
    mark("calibrate")
    mark("calibrate")


def detections_json(boxes, scores, class_ids) -> dict:
    return {"boxes": [[round(float(v), 2) for v in box] for box in boxes],
            "scores": [round(float(s), 4) for s in scores], "class_ids": [int(c) for c in class_ids]}


def run_ours(args: argparse.Namespace) -> list[dict]:
    import cv2

    from server.vision import pipeline as pipeline_module
    from server.vision.hub import FrameHub
    from server.vision.keyframer import Keyframer
    from server.vision.pipeline import FramePipeline
    from server.vision.engines import ONNXRUNTIME
    from server.vision.settings import Settings
    from server.vision.stats import StreamStats
    from server.vision.tracker import Tracker
    from server.vision.sources import Frame

    original_lap = pipeline_module.Stopwatch.lap

    def lap(self, stage: str) -> None:
        original_lap(self, stage)
        mark(stage)

    pipeline_module.Stopwatch.lap = lap
    settings = Settings(engine=ONNXRUNTIME, imgsz=args.imgsz, precision=args.precision,
                        detect_every=args.detect_every, interpolate=args.interpolate, threads=1, realtime=False,
                        loop=False)
    settings, detector_for, names = engine_for(args, settings)
    detector_for(settings)  # the server loads and warms the session before streaming
    pipeline = FramePipeline(detector_for, names, tracker_factory=Tracker)
    hub, stats = FrameHub(), StreamStats()
    capture = cv2.VideoCapture(args.video)
    keyframer = Keyframer(pipeline, capture.get(cv2.CAP_PROP_FPS) or 25.0)
    frames, keyframes = [], 0

    def show(detected) -> None:
        nonlocal keyframes
        keyframes += detected.detected
        result = pipeline.render(detected, settings, fps=stats.fps())
        hub.publish(result.jpeg)
        stats.record(result.timings_ms, len(result.detections), 0.0, nonfinite=result.nonfinite)
        mark("publish")
        found = result.detections
        frames.append(detections_json(found.boxes, found.scores, found.class_ids))

    calibrate()
    mark("begin")
    for index in range(args.frames):
        ok, image = capture.read()
        if not ok:
            raise SystemExit(f"the video ended at frame {index}")
        mark("decode")
        for detected in keyframer.push(Frame(index, image, 0.0, index), settings):
            show(detected)
    for detected in keyframer.flush(settings):
        show(detected)
    mark("end")
    capture.release()
    sys.stderr.write(f"network runs: {keyframes} in {len(frames)} frames\n")
    return frames


ENGINE_NAMES = {"ort": "onnxruntime", "ncnn": "ncnn"}  # the meter's short names -> the server's setting


def engine_for(args: argparse.Namespace, settings):
    """Return (settings with the engine, detector_for, class names): the server's own ModelRuntime.

    A project tree whose Settings has an `engine` field (the NCNN engine's) is asked for the engine by setting;
    an older tree runs ONNX Runtime only. The runtime falls back to ONNX Runtime when NCNN was not built, so
    the engine that will really run is checked before counting.
    """
    import ast
    import dataclasses
    from pathlib import Path

    import onnxruntime as ort

    from server.models.runtime import ModelRuntime

    meta = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"]).get_modelmeta()
    names = ast.literal_eval(meta.custom_metadata_map.get("names", "{}"))
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    int8 = Path(args.int8) if args.int8 else None
    if args.precision == "int8" and args.engine == "ort" and int8 is None:
        raise SystemExit("--int8 is needed for precision int8")
    runtime = ModelRuntime(Path(args.model), lambda: int8, keep=1)
    if "engine" in {f.name for f in dataclasses.fields(settings)}:
        settings = dataclasses.replace(settings, engine=ENGINE_NAMES[args.engine])
        key = runtime.policy.key_for(settings)
        if (key.engine, key.precision) != (ENGINE_NAMES[args.engine], args.precision):
            why = runtime.backends.ncnn.unavailable() or "" if args.engine == "ncnn" else ""
            raise SystemExit(f"the runtime would run {key.engine} {key.precision}, not {args.engine} "
                             f"{args.precision} {why}")
    elif args.engine != "ort":
        raise SystemExit("this project copy has no NCNN engine (its Settings has no engine field)")
    return settings, runtime.detector_for, names


def run_ultralytics(args: argparse.Namespace) -> list[dict]:
    import cv2
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    from ultralytics import YOLO
    from ultralytics.engine.predictor import BasePredictor
    from ultralytics.models.yolo.detect.predict import DetectionPredictor

    def marked(function, before: str | None, after: str):
        def wrapper(*a, **k):
            if before:
                mark(before)
            value = function(*a, **k)
            mark(after)
            return value

        return wrapper

    BasePredictor.preprocess = marked(BasePredictor.preprocess, "decode", "preprocess")
    BasePredictor.inference = marked(BasePredictor.inference, None, "inference")
    DetectionPredictor.postprocess = marked(DetectionPredictor.postprocess, None, "postprocess")
    model = YOLO(args.model, task="detect")
    results = model.predict(source=args.video, stream=True, imgsz=640, conf=0.25, iou=0.7, device="cpu",
                            verbose=False)
    frames = []
    calibrate()
    mark("begin")
    for _ in range(args.frames):
        result = next(results)
        mark("postprocess")  # the predictor's own bookkeeping after postprocess, until it yields
        image = result.plot(font=FONT_NAME, pil=False)
        mark("draw")
        ok, _jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            raise SystemExit("cv2.imencode failed")
        mark("encode")
        boxes = result.boxes
        frames.append(detections_json(boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy()))
    mark("end")
    results.close()
    return frames


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("ours", "ultralytics"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--int8", help="ours: the tuned int8 model beside the fp32 one")
    parser.add_argument("--video", required=True)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--engine", default="ort", choices=("ort", "ncnn"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--detect-every", type=lambda v: v if v == "auto" else int(v), default=1)
    parser.add_argument("--interpolate", default="files", choices=("files", "never"),
                        help="between keyframes: interpolate (the server's default for a file) or track")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.update({"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"})
    one_thread_runtimes()
    frames = run_ours(args) if args.kind == "ours" else run_ultralytics(args)
    sys.stdout.write(json.dumps({"frames": frames}) + "\n")


if __name__ == "__main__":
    main()
