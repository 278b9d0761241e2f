"""The command line: flags, the variants they name, and the run from models to table, JSON and plot."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from bench.fps.machine import machine_summary
from bench.fps.models import class_names, int8_model, our_onnx, ultralytics_onnx
from bench.fps.records import ULTRALYTICS_ONNX, ULTRALYTICS_PT, Variant
from bench.fps.results import draw_plot, evaluate_targets, format_table, score_rows
from bench.fps.rows import ProducerRun, UltralyticsRun, bench_runtime, run_interleaved
from bench.fps.server_http import run_http
from server.config import Config
from server.vision.detector import default_threads
from server.vision.engines import ONNXRUNTIME
from server.vision.settings import Settings
from server.vision.sources import probe_video
import bench.fps

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fps", description=bench.fps.__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="YOLOv8 detect weights, .pt or .onnx")
    parser.add_argument("--frames", type=int, default=300, help="frames per row (at most the video's)")
    parser.add_argument("--warmup", type=int, default=5, help="first frames of each row left out of timing")
    parser.add_argument("--segment", type=int, default=40,
                        help="frames a row runs before the next row's turn (rows interleave, so they share "
                             "the CPU's ups and downs)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    parser.add_argument("--imgsz", nargs="+", type=int, default=[640, 320])
    parser.add_argument("--detect-every", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--variants", nargs="+", type=Variant.parse, help="exact variants, instead of the grid")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--no-ultralytics", action="store_true", help="skip the Ultralytics rows")
    parser.add_argument("--http", nargs="*", type=Variant.parse,
                        default=[Variant("fp32", 640), Variant("int8", 320, 3)],
                        help="variants to stream from the real server (none: skip)")
    parser.add_argument("--serial", nargs="*", type=Variant.parse,
                        default=[Variant("fp32", 640), Variant("int8", 320, 3)],
                        help="variants (of those run) also run with the serial producer, to compare latency and fps "
                             "(none: skip)")
    parser.add_argument("--viewers", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--http-seconds", type=float, default=10.0)
    parser.add_argument("--retune", action="store_true", help="tune int8 again even if a tuning is cached")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "bench-results" / "cache")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="draw speed vs agreement here (PNG)")
    return parser.parse_args(argv)


def variants_from(args: argparse.Namespace) -> list[Variant]:
    """Return the variants to run, the reference (fp32 at 640, every frame) first."""
    grid = args.variants or [Variant(p, s, d) for p in args.precision for s in args.imgsz for d in args.detect_every]
    ordered = [Variant("fp32", 640)] + [v for v in grid if v != Variant("fp32", 640)]
    return ordered + [v for v in args.http if v not in ordered]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    video_info = probe_video(args.video)
    frames = min(args.frames, video_info.frames)
    args.cache.mkdir(parents=True, exist_ok=True)
    variants = variants_from(args)
    base = Settings(engine=ONNXRUNTIME, threads=args.threads)  # the rows name their precision: no auto here
    print(f"video {args.video.name}: {video_info.width}x{video_info.height}, {frames} frames per row; "
          f"model {args.model.name}; {len(variants)} variants; {args.threads} threads", file=sys.stderr)

    fp32 = our_onnx(args.model, args.cache)
    int8, tuning = (None, None)
    if any(v.precision == "int8" for v in variants):
        int8, tuning = int8_model(fp32, args.video, args.threads, args.retune)
    runtime, names = bench_runtime(fp32, int8), class_names(fp32)

    runs, peer = [], None
    if not args.no_ultralytics:
        if args.model.suffix == ".pt":
            runs.append(UltralyticsRun(ULTRALYTICS_PT, args.model, args.video, frames, base))
        exported = ultralytics_onnx(args.model, args.cache)
        peer = UltralyticsRun(ULTRALYTICS_ONNX, exported, args.video, frames, base)
    runs += [ProducerRun(v, runtime, args.video, names, frames, base) for v in variants]
    serial = [v for v in args.serial if v in variants]  # only variants this run measures anyway
    runs += [ProducerRun(v, runtime, args.video, names, frames, base, pipelined=False) for v in serial]
    rows = run_interleaved(runs, peer, args.warmup, args.segment)
    score_rows(rows)

    # The peer has finished (and freed its session) before our server starts: it never runs beside our stream.
    http = run_http(args.http, args.viewers, fp32, args.video, base, args.http_seconds) if args.http else []
    for item in http:
        item.viewer_cap = Config().viewer_max_fps
    targets = evaluate_targets(rows, http)

    machine = machine_summary(args.threads)
    print(format_table(rows, http, targets, machine))
    results = {
        "machine": machine,
        "video": {"name": args.video.name, **asdict(video_info), "frames_per_row": frames},
        "model": args.model.name,
        "settings": {"conf": base.conf, "iou": base.iou, "jpeg_quality": base.jpeg_quality, "warmup": args.warmup,
                     "segment": args.segment},
        "rows": [row.as_dict() for row in rows],
        "http": [item.as_dict() for item in http],
        "targets": [target.as_dict() for target in targets],
        "int8_tuning": tuning,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        draw_plot(rows, args.plot)
    return results
