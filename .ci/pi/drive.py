"""Drive a running server over HTTP the way a user would, and compare what two servers streamed.

Used by .ci/pi/check.sh, which runs one server inside the emulated aarch64 root and one on this x86_64 host
(from the repository, with PYTHONPATH=. since .ci is no package name):

    python .ci/pi/drive.py video OUT.mkv                 the check's video: shapes, and each frame's number
    python .ci/pi/drive.py stream URL --model M --video V --out DIR [--frames N] [--realtime]
    python .ci/pi/drive.py compare X86_DIR ARM_DIR       the streamed pictures of the same frames must agree
    python .ci/pi/drive.py boxes X86.json ARM.json       the detected boxes of the same frames must agree
    python .ci/pi/drive.py graphs X86.onnx ARM.onnx      the two servers' conversions of one .pt must agree
    python .ci/pi/drive.py engines STREAM.json ORT.json NCNN.json   NCNN offered, and agreeing with ONNX Runtime
    python .ci/pi/drive.py reset URL

Every frame of the check's video carries its own number as a row of black and white blocks, so a JPEG taken
from the MJPEG stream tells which source frame it shows even when a viewer skips frames. Two servers that
detect the same boxes draw the same picture: outside the status line (it shows fps), their JPEGs of one
source frame differ only where a label's score rounds the other way or a box edge sits on a half pixel (tens
to hundreds of pixels), while a neighbouring frame differs in tens of thousands. The boxes themselves are
compared as numbers (`boxes`): .ci/pi/detections.py runs the server's detect path on the same frames on
both sides, each with the ONNX its own server converted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import requests

from harness.client import video_feed
from server.demo.video import render_frames

logger = logging.getLogger("ci.pi.drive")

CHECK_FPS = 1.0  # slow enough that an x86 viewer in realtime mode sees every frame
SOURCE_STRIDE = 10  # take every 10th demo frame so shapes move tens of pixels between check frames
BITS = 8
BLOCK = 16  # px per barcode block, in the bottom-right corner
STATUS_ROWS = 40  # the status line (fps, precision, size) is drawn in the top rows; the two sides' fps differ
DIFF_LEVEL = 64  # a pixel "differs" when a channel is off by more than this (JPEG noise at quality 95 is far less)
# Seen between aarch64 and x86: 0-800 px (a score printed as 0.89 on one side and 0.90 on the other, a label band
# one pixel wider); between neighbouring frames: 37,000 px and more.
MAX_DIFFERING = 2000
CONTROL_FACTOR = 5  # another frame must differ at least this many times the limit, or the comparison is blind
# The boxes, end to end: OpenCV's bilinear resize rounds differently on NEON and AVX (seen: 14% of the network's
# input values one level apart), which moves boxes by ~0.07 px and scores by ~0.012 (seen); these limits allow
# for that and no more.
BOX_TOLERANCE_PX = 1.0
SCORE_TOLERANCE = 0.03
# The network alone, both sides given the same input tensor: ONNX Runtime's aarch64 and x86 kernels agree to
# float rounding (seen: 1.2e-4 px in box outputs, 5e-7 in scores).
RAW_BOX_TOLERANCE = 0.01
RAW_SCORE_TOLERANCE = 1e-4
# NCNN against ONNX Runtime on one CPU (tests/test_ncnn.py holds the same bars on x86): fp32 raw outputs within
# 1e-3 relative on the same input; fp16 boxes matched within BOX_TOLERANCE_PX, scores within SCORE_TOLERANCE.
NCNN_RAW_RELATIVE = 1e-3
# ONNX Runtime fp32 on both sides, not auto: the two devices would each pick their own engine, and under
# emulation auto's timing would take the check's CPU (the engines are compared in step 5 instead).
SETTINGS = {"imgsz": 320, "loop": False, "detect_every": 1, "jpeg_quality": 95, "output_width": None,
            "engine": "onnxruntime", "precision": "fp32"}


def paint_number(image: np.ndarray, number: int) -> None:
    """Write number into the bottom-right corner as BITS blocks, white for 1, black for 0."""
    height, width = image.shape[:2]
    for bit in range(BITS):
        x = width - (bit + 1) * BLOCK
        image[height - BLOCK : height, x : x + BLOCK] = 255 if number >> bit & 1 else 0


def read_number(image: np.ndarray) -> int:
    """Read back the number paint_number wrote, from each block's centre (robust to JPEG noise)."""
    height, width = image.shape[:2]
    number = 0
    for bit in range(BITS):
        x = width - (bit + 1) * BLOCK
        centre = image[height - BLOCK + 4 : height - 4, x + 4 : x + BLOCK - 4]
        if centre.mean() > 127:
            number |= 1 << bit
    return number


def write_video(path: Path, frames: int) -> Path:
    """Write a lossless (FFV1) video of demo frames, each carrying its number; decoding is exact on every CPU."""
    writer = None
    source = render_frames(seconds=frames * SOURCE_STRIDE / 25 + 1, fps=25)
    try:
        for number in range(frames):
            for _ in range(SOURCE_STRIDE):
                image = next(source)
            image = image.copy()
            paint_number(image, number)
            if writer is None:
                size = (image.shape[1], image.shape[0])
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), CHECK_FPS, size)
                if not writer.isOpened():
                    raise RuntimeError(f"cannot write {path} with FFV1")
            writer.write(image)
    finally:
        if writer is not None:
            writer.release()
    return path


def _checked(response: requests.Response, expected: int, what: str) -> dict:
    if response.status_code != expected:
        raise SystemExit(f"{what}: HTTP {response.status_code} (expected {expected}): {response.text[:500]}")
    return response.json()


def wait_ready(url: str, timeout: float) -> dict:
    """Poll /api/status until the server answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _checked(requests.get(f"{url}/api/status", timeout=30), 200, "status")
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {timeout:.0f} s")
            time.sleep(1)


def upload(url: str, route: str, path: Path, timeout: float) -> dict:
    started = time.perf_counter()
    with path.open("rb") as file:
        response = requests.post(f"{url}{route}", files={"file": (path.name, file)}, timeout=timeout)
    body = _checked(response, 201, f"POST {route} {path.name}")
    logger.info("POST %s %s: 201 in %.1f s: %s", route, path.name, time.perf_counter() - started, body)
    return body


def collect_frames(url: str, wanted: int, timeout: float) -> dict[int, bytes]:
    """Read the MJPEG stream until wanted distinct frames arrived or the stream ended; key them by number."""
    frames: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    with video_feed(url, timeout=timeout) as jpegs:
        for jpeg in jpegs:
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            number = read_number(image)
            logger.info("frame %d: %d bytes after %.1f s", number, len(jpeg), timeout - (deadline - time.monotonic()))
            frames.setdefault(number, jpeg)
            if len(frames) >= wanted or time.monotonic() > deadline:
                break
    return frames


def stream(args) -> None:
    """Upload, set, start, watch, stop: what a user does from the page, over HTTP."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = wait_ready(args.url, args.ready_timeout)
    logger.info("%s is up (streaming=%s)", args.url, status["streaming"])
    record = {"model": upload(args.url, "/upload/model", Path(args.model), args.timeout)}
    record["video"] = upload(args.url, "/upload/video", Path(args.video), args.timeout)
    settings = {**SETTINGS, "realtime": args.realtime}
    record["settings"] = _checked(requests.post(f"{args.url}/api/settings", json=settings, timeout=30), 200, "settings")
    started = time.perf_counter()
    _checked(requests.post(f"{args.url}/stream/start", timeout=args.timeout), 200, "start")
    frames = collect_frames(args.url, args.frames, args.timeout)
    record["stream_seconds"] = round(time.perf_counter() - started, 1)
    record["status"] = _checked(requests.get(f"{args.url}/api/status", timeout=30), 200, "status")
    _checked(requests.post(f"{args.url}/stream/stop", timeout=60), 200, "stop")
    for number, jpeg in frames.items():
        (out / f"frame-{number:03d}.jpg").write_bytes(jpeg)
    record["frames"] = sorted(frames)
    (out / "stream.json").write_text(json.dumps(record, indent=2))
    logger.info("%d frames (%s) in %.1f s", len(frames), sorted(frames), record["stream_seconds"])
    if not frames:
        raise SystemExit("no frame arrived")


def _load(folder: Path) -> dict[int, np.ndarray]:
    return {int(p.stem.split("-")[1]): cv2.imread(str(p)) for p in sorted(folder.glob("frame-*.jpg"))}


def differing_pixels(first: np.ndarray, second: np.ndarray) -> int:
    """Pixels below the status line where some channel differs by more than DIFF_LEVEL."""
    if first.shape != second.shape:
        return first.shape[0] * first.shape[1]
    diff = np.abs(first.astype(np.int16) - second.astype(np.int16)).max(axis=2)[STATUS_ROWS:]
    return int((diff > DIFF_LEVEL).sum())


def compare(args) -> None:
    """Same frame number -> same picture; neighbouring frames (boxes moved) must not pass, or the check proves nothing."""
    reference, candidate = _load(Path(args.x86)), _load(Path(args.arm))
    common = sorted(set(reference) & set(candidate))
    failures = []
    for number in common:
        same = differing_pixels(reference[number], candidate[number])
        others = [differing_pixels(reference[other], candidate[number]) for other in reference if other != number]
        control = min(others) if others else None
        logger.info(
            "frame %d: %d px differ from the x86 frame (limit %d); nearest other x86 frame: %s px",
            number, same, MAX_DIFFERING, control,
        )
        if same > MAX_DIFFERING:
            failures.append(f"frame {number}: {same} px differ from the x86 run")
        if control is not None and control <= CONTROL_FACTOR * MAX_DIFFERING:
            failures.append(f"frame {number}: another frame passes too ({control} px): the comparison is blind")
    if len(common) < args.min_frames:
        failures.append(f"only {len(common)} frames in common ({common}); need {args.min_frames}")
    if failures:
        raise SystemExit("aarch64 and x86 streams differ:\n  " + "\n  ".join(failures))
    logger.info("the aarch64 server streamed frames %s as the x86 one drew them (up to label rounding)", common)


def match_boxes(reference: dict, candidate: dict, conf: float) -> tuple[list[str], float, float]:
    """Pair boxes of one frame by class and position; return problems, largest box and score differences."""
    problems, worst_px, worst_score = [], 0.0, 0.0
    unmatched = list(range(len(candidate["boxes"])))
    for box, score, cls in zip(reference["boxes"], reference["scores"], reference["classes"]):
        best, best_px = None, None
        for j in unmatched:
            if candidate["classes"][j] != cls:
                continue
            px = float(np.abs(np.subtract(box, candidate["boxes"][j])).max())
            if best_px is None or px < best_px:
                best, best_px = j, px
        if best is None or best_px > BOX_TOLERANCE_PX:
            if score - conf > SCORE_TOLERANCE:  # a box at the threshold may fall on either side of it
                problems.append(f"class {cls} box {np.round(box, 1).tolist()} ({score:.3f}) has no match")
            continue
        unmatched.remove(best)
        worst_px = max(worst_px, best_px)
        worst_score = max(worst_score, abs(score - candidate["scores"][best]))
    for j in unmatched:
        if candidate["scores"][j] - conf > SCORE_TOLERANCE:
            problems.append(f"extra class {candidate['classes'][j]} box {np.round(candidate['boxes'][j], 1).tolist()}")
    if worst_score > SCORE_TOLERANCE:
        problems.append(f"scores differ by {worst_score:.4f}")
    return problems, worst_px, worst_score


def boxes(args) -> None:
    """The same frames through the same detect path on two CPUs: same classes, boxes within a pixel."""
    reference = json.loads(Path(args.x86).read_text())
    candidate = json.loads(Path(args.arm).read_text())
    failures, worst_px, worst_score, total = [], 0.0, 0.0, 0
    for frame, found in sorted(reference["frames"].items(), key=lambda item: int(item[0])):
        other = candidate["frames"].get(frame)
        if other is None:
            failures.append(f"frame {frame}: missing on aarch64")
            continue
        problems, px, score = match_boxes(found, other, reference["conf"])
        failures += [f"frame {frame}: {p}" for p in problems]
        worst_px, worst_score, total = max(worst_px, px), max(worst_score, score), total + len(found["boxes"])
        logger.info("frame %s: %d boxes on x86, %d on aarch64; max |box diff| %.4f px, max |score diff| %.5f",
                    frame, len(found["boxes"]), len(other["boxes"]), px, score)
    raw = reference.get("raw") or candidate.get("raw")
    if raw is None:
        failures.append("no raw-output comparison on the same input tensor")
    else:
        logger.info("network on the same input (frame %d): max |box output diff| %.2g (limit %g), max |score diff| "
                    "%.2g (limit %g); own preprocessing: %d of %d input values differ, by up to %.0f levels",
                    raw["frame"], raw["max_box_diff"], RAW_BOX_TOLERANCE, raw["max_score_diff"], RAW_SCORE_TOLERANCE,
                    raw["input_values_differing"], raw["input_values"], raw["max_input_diff_levels"])
        if raw["max_box_diff"] > RAW_BOX_TOLERANCE or raw["max_score_diff"] > RAW_SCORE_TOLERANCE:
            failures.append(f"the network computes differently on the same input: {raw}")
    if len(reference["frames"]) < args.min_frames or total == 0:
        failures.append(f"{len(reference['frames'])} frames and {total} boxes: too little to compare")
    if failures:
        raise SystemExit("aarch64 and x86 detections differ:\n  " + "\n  ".join(failures))
    logger.info("%d boxes on %d frames agree: max |box diff| %.4f px (limit %.1f), max |score diff| %.5f (limit %.2f)",
                total, len(reference["frames"]), worst_px, BOX_TOLERANCE_PX, worst_score, SCORE_TOLERANCE)


def graph_differences(first, second) -> list[str]:
    """What differs between two ONNX models, beyond the conversion's date stamp."""
    from onnx import numpy_helper

    problems = []
    if [(n.op_type, list(n.input), list(n.output)) for n in first.graph.node] != [
        (n.op_type, list(n.input), list(n.output)) for n in second.graph.node
    ]:
        problems.append("the graphs' nodes differ")
    metadata = [{p.key: p.value for p in m.metadata_props if p.key != "date"} for m in (first, second)]
    if metadata[0] != metadata[1]:
        problems.append(f"metadata differs: {metadata[0]} vs {metadata[1]}")
    weights = [{i.name: numpy_helper.to_array(i) for i in m.graph.initializer} for m in (first, second)]
    if set(weights[0]) != set(weights[1]):
        problems.append("the graphs hold different initializers")
    else:
        changed = [name for name in weights[0] if not np.array_equal(weights[0][name], weights[1][name])]
        if changed:
            problems.append(f"{len(changed)} of {len(weights[0])} initializers differ, e.g. {changed[:3]}")
    return problems


def graphs(args) -> None:
    """The built-in .pt converter on aarch64 and on x86: the same nodes, bit-identical weights."""
    import onnx

    first, second = onnx.load(args.x86), onnx.load(args.arm)
    problems = graph_differences(first, second)
    if problems:
        raise SystemExit("the aarch64 and x86 conversions differ:\n  " + "\n  ".join(problems))
    logger.info(
        "both servers converted the .pt to the same graph: %d nodes, %d initializers bit-identical (only the date differs)",
        len(first.graph.node), len(first.graph.initializer),
    )


def engines(args) -> None:
    """The aarch64 server offers NCNN for the model, and NCNN finds ONNX Runtime's boxes on the same CPU."""
    model = json.loads(Path(args.stream).read_text())["model"]["model"]
    offered = model.get("engines", {})
    failures = []
    if set(offered.get("ncnn", ())) != {"fp32", "fp16"}:
        failures.append(f"NCNN is not offered: engines {offered}, why: {model.get('ncnn_unavailable')}")
    reference, candidate = (json.loads(Path(name).read_text()) for name in (args.onnxruntime, args.ncnn))
    relative = candidate["raw_fp32"]["max_relative_diff"]
    if relative > NCNN_RAW_RELATIVE:
        failures.append(f"NCNN fp32 raw outputs differ from ONNX Runtime's by {relative:.2g} relative")
    worst_px, total = 0.0, 0
    for frame, found in sorted(reference["frames"].items(), key=lambda item: int(item[0])):
        problems, px, _ = match_boxes(found, candidate["frames"].get(frame, {"boxes": [], "scores": [],
                                                                             "classes": []}), reference["conf"])
        failures += [f"frame {frame}: NCNN fp16 {p}" for p in problems]
        worst_px, total = max(worst_px, px), total + len(found["boxes"])
    if len(reference["frames"]) < args.min_frames or total == 0:
        failures.append(f"{len(reference['frames'])} frames and {total} boxes: too little to compare")
    if failures:
        raise SystemExit("NCNN on aarch64:\n  " + "\n  ".join(failures))
    logger.info("NCNN offered (%s); fp32 raw within %.2g relative of ONNX Runtime; fp16: %d boxes on %d frames "
                "within %.3f px", offered["ncnn"], relative, total, len(reference["frames"]), worst_px)


def reset(args) -> None:
    deleted = _checked(requests.post(f"{args.url}/reset", timeout=60), 200, "reset")["deleted"]
    status = _checked(requests.get(f"{args.url}/api/status", timeout=30), 200, "status")
    logger.info("reset deleted %d files: %s", len(deleted), deleted)
    if not deleted or status["video"] is not None or status["model"] is not None:
        raise SystemExit(f"reset left state behind: deleted={deleted} video={status['video']} model={status['model']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    video = commands.add_parser("video")
    video.add_argument("out")
    video.add_argument("--frames", type=int, default=5)
    run = commands.add_parser("stream")
    run.add_argument("url")
    run.add_argument("--model", required=True)
    run.add_argument("--video", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--frames", type=int, default=4, help="stop after this many distinct frames")
    run.add_argument("--realtime", action="store_true", help="pace at the video's fps (x86) instead of flat out")
    run.add_argument("--timeout", type=float, default=600, help="seconds for each request and for the stream")
    run.add_argument("--ready-timeout", type=float, default=300)
    both = commands.add_parser("compare")
    both.add_argument("x86")
    both.add_argument("arm")
    both.add_argument("--min-frames", type=int, default=3)
    numbers = commands.add_parser("boxes")
    numbers.add_argument("x86")
    numbers.add_argument("arm")
    numbers.add_argument("--min-frames", type=int, default=3)
    models = commands.add_parser("graphs")
    models.add_argument("x86")
    models.add_argument("arm")
    both_engines = commands.add_parser("engines")
    both_engines.add_argument("stream", help="the stream.json of `stream` (the upload's answer)")
    both_engines.add_argument("onnxruntime", help="detections.py' boxes")
    both_engines.add_argument("ncnn", help="detections.py --ncnn's output")
    both_engines.add_argument("--min-frames", type=int, default=3)
    wipe = commands.add_parser("reset")
    wipe.add_argument("url")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    if args.command == "video":
        write_video(Path(args.out), args.frames)
    else:
        {"stream": stream, "compare": compare, "boxes": boxes, "graphs": graphs, "engines": engines,
         "reset": reset}[args.command](args)


if __name__ == "__main__":
    main()
