"""Time the engines on one model, interleaved: ONNX Runtime fp32, NCNN fp32, fp16 and int8, and where NCNN's time goes.

    python -m bench.engine_timing [--model M.onnx] [--imgsz 640] [--threads 2] [--rounds 5] [--no-int8]

Every engine runs the same demo-video frames (aspect-true input, as the server feeds it) in the same rounds, the
order reversed every other round (server.models.tuning.judging.time_models, as the int8 verdict times). For NCNN it
also prints the network alone (cut at the head's per-level maps) and the numpy head decode (DFL, anchors, class
sigmoid) that follows it: the numbers behind the cut (docs/engines.md). NCNN int8 (server.models.ncnn.int8) is
calibrated on 24 other frames of the demo video, and its agreement with ONNX Runtime fp32 is printed as the int8
verdict measures it. The NCNN files are written into a temporary folder, never beside the model. The CPU's
speed-relevant flags are printed first: int8 speed on x86 depends on VNNI.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from server.demo import DEMO_ONNX
from server.demo.video import render_frames
from server.models.ncnn import ncnn_model_for
from server.models.ncnn.int8 import build_ncnn_int8
from server.models.tuning import judging
from server.models.tuning.judging import time_models
from server.models.tuning.tune import machine_info
from server.vision import processing
from server.vision.detector import Detector
from server.vision.engines.ncnn_engine import NcnnEngine

logger = logging.getLogger("bench.engine_timing")


def median_ms(function, inputs, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        for value in inputs:
            started = time.perf_counter()
            function(value)
            times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_ONNX)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--no-int8", action="store_true", help="leave NCNN int8 out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="engine-timing-") as work:
        model = Path(work) / args.model.name
        shutil.copyfile(args.model, model)
        build = ncnn_model_for(model)
        if build.files is None:
            raise SystemExit(build.reason)
        print(f"CPU: {machine_info()}")
        print(f"NCNN model written in {build.seconds * 1000:.0f} ms")
        detectors = {"onnxruntime fp32": Detector(model, args.threads)}
        for precision in ("fp32", "fp16"):
            detectors[f"ncnn {precision}"] = Detector(NcnnEngine(build.files, args.threads, precision))
        frames = list(render_frames(seconds=args.frames / 5, fps=5))
        input_hw = detectors["onnxruntime fp32"].input_hw(frames[0].shape[:2], args.imgsz)
        tensors = [processing.preprocess(frame, input_hw)[0] for frame in frames]
        if not args.no_int8:
            others = list(render_frames(seconds=20, fps=25))[args.frames * 5 + 1::20][:24]  # not the timed frames
            report = build_ncnn_int8(build, [processing.preprocess(f, input_hw)[0] for f in others])
            detectors["ncnn int8"] = Detector(NcnnEngine(report.files, args.threads, "int8"))
            held = judging.collect_held_back(detectors["onnxruntime fp32"], list(render_frames(seconds=20, fps=2.4)),
                                             args.imgsz)
            score = judging.agreement([detectors["ncnn int8"].infer(t) for t in held.tensors], held)
            print(f"NCNN int8 written in {report.seconds:.1f} s ({len(report.quantized)} convolutions int8, "
                  f"{len(report.kept_float)} float, {report.method} on {report.frames} frames); agreement with "
                  f"ONNX Runtime fp32 {score:.3f} ({held.method} on {len(held.tensors)} frames)")
        medians = time_models(list(detectors.values()), tensors, args.rounds)
        print(f"{args.model.name} at {input_hw[0]}x{input_hw[1]}, {args.threads} threads, median ms per inference "
              f"over {args.rounds} interleaved rounds of {len(tensors)} frames:")
        for column, name in enumerate(detectors):
            per_round = ", ".join(f"{ms:.1f}" for ms in medians[:, column])
            print(f"  {name:18s} {np.median(medians[:, column]):7.1f} ms   (rounds: {per_round})")
        for name in [n for n in detectors if n.startswith("ncnn")]:
            engine = detectors[name].engine
            levels = [engine.raw_levels(t) for t in tensors]
            network = median_ms(engine.raw_levels, tensors, args.rounds)
            decode = median_ms(engine.decoder.decode, levels, args.rounds)
            print(f"  {name}: network to the per-level maps {network:.1f} ms + numpy head decode {decode:.2f} ms")


if __name__ == "__main__":
    main()
