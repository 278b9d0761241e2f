"""Count the aarch64 instructions of one NCNN inference, per precision, on the emulated Cortex-A76 (one thread).

    python -m bench.aarch64.ncnn_count [--model M.onnx] [--sizes 640,320] [--precisions fp16,int8w-fp16] [--repeats 3]
                                  [--agreement] [--work DIR]

Precisions: fp32, fp16; int8 (every conv int8 but the head's maps, float layers fp32), int8-fp16 (the same, float
layers fp16), int8w and int8w-fp16 (the 3x3 stride-1 convs kept float as well: what server.models.ncnn.int8 makes
on an ARM CPU with dot product; int8w-fp16 is what NcnnEngine runs there).

On the host this writes the model's NCNN files (fp32 and, calibrated on the demo video's frames, int8:
server.models.ncnn.int8) into --work, saves one preprocessed demo frame per size, then runs this same file as the
guest under bench/aarch64/qemu-count.sh with the marks plugin: the guest (numpy + ncnn only, the root's
/opt/edge-detect venv) loads the net with that precision's options, runs `--repeats` inferences on the frame, and
marks before and after each; an inference's count is the main thread's instructions between its two marks.
--agreement also runs each variant once per held-back frame in the emulator (the A76's kernels: fp16 arithmetic,
dot product) and prints its agreement with ONNX Runtime fp32 run on the host, as the int8 verdict measures it.
Instructions are not time across precisions (docs/aarch64-meter.md, Limits): this says how much work each variant
asks of an A76, not how fast it runs.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MARK_SYSCALL, BEFORE, AFTER = 19777, 21, 22


def guest(args: argparse.Namespace) -> None:
    import ncnn
    import numpy as np

    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype, syscall.argtypes = ctypes.c_long, (ctypes.c_long, ctypes.c_long)
    head = json.loads(Path(args.head).read_text())
    net = ncnn.Net()
    options = net.opt
    options.num_threads = 1
    half = args.precision.endswith("fp16")  # int8-fp16: int8 convolutions, fp16 for the other layers
    options.use_fp16_storage = options.use_fp16_packed = options.use_fp16_arithmetic = half
    options.use_bf16_storage = False
    options.use_int8_inference = args.precision.startswith("int8")
    assert net.load_param(args.param) == 0 and net.load_model(args.bin) == 0
    if args.save:  # agreement: run each held-back tensor once, keep the per-level maps
        tensors, maps = np.load(args.tensor), {}
        for index in range(len(tensors.files)):
            image = np.ascontiguousarray(tensors[f"t{index}"][0])  # held: ncnn.Mat wraps its memory, no copy
            extractor = net.create_extractor()
            extractor.input(head["input"], ncnn.Mat(image))
            for number, blob in enumerate(blob for level in head["levels"] for blob in level):
                maps[f"t{index}_{number}"] = np.array(extractor.extract(blob)[1])
        np.savez(args.save, **maps)
        print(json.dumps({"sums": [float(len(maps))]}))
        return
    tensor = np.load(args.tensor)
    sums = []
    for _ in range(args.repeats):
        syscall(MARK_SYSCALL, BEFORE)
        extractor = net.create_extractor()
        extractor.input(head["input"], ncnn.Mat(np.ascontiguousarray(tensor[0])))
        maps = [np.array(extractor.extract(blob)[1]) for level in head["levels"] for blob in level]
        syscall(MARK_SYSCALL, AFTER)
        sums.append(float(sum(m.sum() for m in maps)))
    print(json.dumps({"sums": sums}))


def prepare(args: argparse.Namespace) -> dict:
    """Write the NCNN fp32 + int8 models of a copy of the model and a demo frame per size into args.work."""
    import shutil

    from server.demo.video import render_frames
    from server.models.tuning.calibration import split_frames, spread
    from server.models.ncnn import ncnn_model_for
    from server.models.ncnn.int8 import build_ncnn_int8
    from server.vision import processing
    from server.vision.detector import Detector

    import numpy as np

    args.work.mkdir(parents=True, exist_ok=True)
    files = {}
    frames = spread(list(render_frames()), 96)
    calibration, held = split_frames(frames)
    for size in args.sizes:
        folder = args.work / str(size)
        folder.mkdir(exist_ok=True)
        copy = folder / args.model.name
        if not copy.exists():
            shutil.copyfile(args.model, copy)
        build = ncnn_model_for(copy)
        if build.files is None:
            raise SystemExit(build.reason)
        input_hw = Detector(copy, 1).input_hw(frames[0].shape[:2], size)
        tensors = [processing.preprocess(f, input_hw)[0] for f in calibration]
        int8 = build_ncnn_int8(build, tensors, args.method).files
        if "int8w" in args.precisions:  # 3x3 stride-1 convs kept float (fp16 Winograd), the others int8
            from server.models.ncnn.int8 import KEEP_HEAD, KEEP_WINOGRAD

            hybrid = folder / f"w-{copy.name}"  # its own copy: the int8 files are named after the ONNX
            shutil.copyfile(copy, hybrid)
            int8w = build_ncnn_int8(ncnn_model_for(hybrid), tensors, args.method,
                                    frozenset({KEEP_HEAD, KEEP_WINOGRAD})).files
        np.save(folder / "frame.npy", processing.preprocess(held[0], input_hw)[0])
        if args.agreement:
            from server.models.tuning import judging

            kept = judging.collect_held_back(Detector(copy, 1), held, size)
            np.savez(folder / "held.npz", **{f"t{i}": t for i, t in enumerate(kept.tensors)})
            files.setdefault("held", {})[size] = kept
        files[size] = {"fp32": build.files, "fp16": build.files, "int8": int8, "int8-fp16": int8,
                       "tensor": folder / "frame.npy"}
        if "int8w" in args.precisions:
            files[size].update({"int8w": int8w, "int8w-fp16": int8w})
    return files


def emulated_agreement(files: dict, size: int, precision: str, args: argparse.Namespace) -> float:
    """Run the variant on the held-back tensors in the emulator; return its agreement with ONNX Runtime fp32."""
    from server.models.tuning import judging
    from server.vision.engines.head import HeadDecoder
    from server.vision.engines.ncnn_engine import NcnnHead

    import numpy as np

    model, held = files[size][precision], files["held"][size]
    out = args.work / f"{size}-{precision}-maps.npz"
    run_guest(model, args.work / str(size) / "held.npz", precision, args, ["--save", str(out)], marks=False)
    head = NcnnHead.from_json(model.head.read_text())
    decoder = HeadDecoder(head.strides, head.reg_max, np.asarray(head.bins, np.float32))
    maps = np.load(out)
    outputs = []
    for index in range(len(held.tensors)):
        flat = [maps[f"t{index}_{n}"] for n in range(2 * len(head.levels))]
        outputs.append(decoder.decode(list(zip(flat[0::2], flat[1::2])))[None])
    return judging.agreement(outputs, held)


def run_guest(model, tensor: Path, precision: str, args: argparse.Namespace, extra: list[str], marks: bool = True):
    """Run this file's guest mode in the emulator; return its stdout and the plugin's log."""
    root = Path(os.environ.get("PI_ROOT", "/var/tmp/pi-root"))
    qemu = os.environ.get("QEMU_COUNT", "/var/tmp/qemu-count")
    site = root / "opt/edge-detect/.venv/lib/python3.11/site-packages"
    log = args.work / f"{tensor.stem}-{precision}.plugin.log"
    command = ["bash", str(Path(__file__).with_name("qemu-count.sh")), "count", "/usr/bin/python3.11",
               str(Path(__file__)), "guest", "--param", str(model.param), "--bin", str(model.bin), "--head", str(model.head),
               "--tensor", str(tensor), "--precision", precision, "--repeats", str(args.repeats), *extra]
    env = {**os.environ, "PI_ROOT": str(root), "QEMU_COUNT": qemu, "COUNT_PLUGIN": "marks" if marks else "insn",
           "COUNT_LOG": str(log), "COUNT_ENV": f"PYTHONPATH={site} OMP_NUM_THREADS=1 PYTHONHASHSEED=0 "
                                               "PYTHONDONTWRITEBYTECODE=1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{tensor} {precision}: {(done.stderr or done.stdout)[-1500:]}")
    text = log.read_text() if log.exists() else ""
    log.unlink(missing_ok=True)
    return done.stdout, text


def count(files: dict, size: int, precision: str, args: argparse.Namespace) -> dict:
    """Count the variant's inferences on the saved frame; return the per-inference counts."""
    from bench.aarch64.counts import parse_marks

    started = time.monotonic()
    stdout, log = run_guest(files[size][precision], files[size]["tensor"], precision, args, [])
    marks = parse_marks(log)
    before = [m for m in marks if m.code == BEFORE]
    after = [m for m in marks if m.code == AFTER]
    per = [b.vcpu_count - a.vcpu_count for a, b in zip(before, after)]
    sums = next(json.loads(line)["sums"] for line in reversed(stdout.splitlines()) if line.startswith('{"sums"'))
    return {"size": size, "precision": precision, "per_inference": per, "seconds": round(time.monotonic() - started),
            "sums": sums}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="host", choices=("host", "guest"))
    parser.add_argument("--model", type=Path, default=Path("server/demo/model/shapes-yolov8n.onnx"))
    parser.add_argument("--sizes", default="640,320")
    parser.add_argument("--precisions", default="fp16,int8")
    parser.add_argument("--method", default="minmax")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("bench-results/ncnn-count"))
    parser.add_argument("--agreement", action="store_true",
                        help="also run each variant on the held-back frames in the emulator and print its agreement "
                             "with ONNX Runtime fp32 (run on the host), as the int8 verdict measures it")
    for name in ("param", "bin", "head", "tensor", "precision", "save"):
        parser.add_argument(f"--{name}")
    args = parser.parse_args()
    if args.mode == "guest":
        guest(args)
        return
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.work = args.work.resolve()
    files = prepare(args)
    results = []
    for size in args.sizes:
        for precision in args.precisions.split(","):
            result = count(files, size, precision, args)
            if args.agreement:
                result["agreement_emulated"] = round(emulated_agreement(files, size, precision, args), 4)
            results.append(result)
            print(json.dumps(result), flush=True)
    (args.work / "counts.json").write_text(json.dumps(results, indent=1))
    for r in results:
        agreement = f", agreement {r['agreement_emulated']:.3f} (emulated)" if "agreement_emulated" in r else ""
        print(f"{r['size']} {r['precision']}: {min(r['per_inference'][1:] or r['per_inference']) / 1e6:,.1f} M "
              f"instructions per inference ({r['seconds']} s){agreement}")


if __name__ == "__main__":
    main()
