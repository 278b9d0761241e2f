"""Run the `auto` engine choice the server runs, on one model and the demo video, and print its table.

    python -m bench.engine_choice [--model M.onnx] [--imgsz 640] [--threads 2] [--recipes u8s8-pc-rr,...]

The same job as the server's (server.models.tuning.tune.time_engines with server.models.tuning.job.other_engines:
the int8 recipes, NCNN fp32/fp16 and NCNN int8 made from the same calibration frames, x threads on 4+ cores,
timed in interleaved rounds, agreement with ONNX Runtime fp32 on held-back frames), in a temporary folder, never
beside the model. The CPU (and its flags) is printed first: the verdict is this device's.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from harness.frames import demo_calibration_frames
from server.demo import DEMO_ONNX
from server.models.choice import reference_key
from server.models.runtime import ModelRuntime
from server.models.tuning.job import other_engines
from server.models.tuning.tune import TimingHooks, TimingRequest, machine_info, time_engines
from server.vision.detector import default_threads


def table(report) -> str:
    lines = [f"{'row':22s} {'engine':11s} {'prec':4s} {'thr':>3s} {'ms':>7s} {'speed-up':>8s} {'+-':>5s} "
             f"{'agree':>5s}  why"]
    for row in report.rows:
        mark = "*" if row.picked else " "
        ms = f"{row.ms:7.1f}" if row.ms is not None else "      -"
        speedup = f"{row.speedup:7.2f}x" if row.speedup is not None else "       -"
        noise = f"{row.noise:5.2f}" if row.noise is not None else "    -"
        agreement = f"{row.agreement:5.3f}" if row.agreement is not None else "    -"
        lines.append(f"{mark}{row.recipe:21s} {row.engine:11s} {row.precision:4s} {row.threads or 0:3d} {ms} "
                     f"{speedup} {noise} {agreement}  {row.why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_ONNX)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--recipes", default="", help="comma-separated int8 recipes (empty: the server's default)")
    parser.add_argument("--min-agreement", type=float, default=0.90)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(f"CPU: {machine_info()}")
    cores = os.cpu_count() or 1
    threads = reference_key(args.threads, cores).threads
    frames = demo_calibration_frames()
    with tempfile.TemporaryDirectory(prefix="engine-choice-") as work:
        model = Path(work) / args.model.name
        shutil.copyfile(args.model, model)
        runtime = ModelRuntime(model, lambda: None)
        request = TimingRequest(args.imgsz, args.min_agreement, threads, [r for r in args.recipes.split(",") if r] or None)
        report = time_engines(model, frames, request,
                              TimingHooks(engines=other_engines(runtime.backends, threads, cores, None)))
    print(f"{args.model.name} at {args.imgsz} ({'x'.join(map(str, report.input_hw))}), reference threads {threads}, "
          f"{report.timing_rounds} interleaved rounds, agreement by {report.agreement_method} on "
          f"{report.held_back_frames} held-back frames, {report.seconds:.0f} s:")
    print(table(report))
    print(f"auto runs: {report.auto['engine']} {report.auto['precision']} with {report.auto['threads']} threads "
          f"({report.auto['why']})")


if __name__ == "__main__":
    main()
