"""What accepting a model upload costs: wall time, peak memory and how often the file is parsed.

    python -m bench.acceptance_cost [--repo DIR] [--models DIR] [--sizes n,s,m] [--repeats 3]

Builds YOLOv8 .pt files from ultralytics' yamls (random weights, nothing downloaded; saved fp16 as ultralytics
does, by bench.ultralytics_reference) and their ONNX exports (ultralytics' own, dynamic) into --models once, then
uploads each through POST /upload/model of a fresh app (create_app, Flask's test client) in a fresh child process
per upload, with an empty uploads folder (no cached conversion). The child runs the code of --repo (default: this
checkout), so the same command measures another checkout, e.g. main before a change:

    python -m bench.acceptance_cost --repo /work/base

Per upload it prints the request's wall time and CPU time (user + system: the server's process, then its
children, the trial run; CPU time suffers less than wall time from a machine shared with other work); the child's
peak RSS (ru_maxrss) before the request (imports, the
app, the upload's bytes held by the test client) and after it; the largest RSS of its own children (the trial
run), sampled every 10 ms (their ru_maxrss would start from the parent's high-water mark, kept across
vfork+exec), and the largest RSS of the child and the server's process together while the trial run lasts; and how many times the upload's pickle was unpickled and an ONNX file parsed with onnx.load
(counted in the child by wrapping the inert unpickler's load and onnx.load, which exist in both versions).
Then what one such read of each file costs, in this process (CPU time, the fastest of the repeats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 1800
UPLOAD_TIMEOUT_S = 1800

# Runs in the child, in --repo, with argv: model path, uploads folder.
CHILD = r"""
import json, resource, sys, threading, time
from pathlib import Path

import onnx
import psutil
from server import create_app
from server.config import Config
from server.models import checkpoint

counts = {"unpickle": 0, "onnx_load": 0}

def counted(key, function):
    def wrapper(*args, **kwargs):
        counts[key] += 1
        return function(*args, **kwargs)
    return wrapper

checkpoint.InertUnpickler.load = counted("unpickle", checkpoint.InertUnpickler.load)
onnx.load = onnx.load_model = counted("onnx_load", onnx.load_model)

model, uploads = Path(sys.argv[1]), Path(sys.argv[2])
client = create_app(Config(uploads=uploads, host="127.0.0.1")).test_client()
body = model.read_bytes()
import io

def sample_children(peak, done):
    # A child's ru_maxrss starts from its parent's high-water mark (kept across vfork+exec), so it is sampled;
    # peak[1]: this process and its children together, while one runs.
    me = psutil.Process()
    while not done.is_set():
        rss = []
        for child in me.children(recursive=True):
            try:
                rss.append(child.memory_info().rss)
            except psutil.Error:
                pass
        if rss:
            peak[0] = max(peak[0], *rss)
            peak[1] = max(peak[1], me.memory_info().rss + sum(rss))
        done.wait(SAMPLE_S)

SAMPLE_S = 0.01
peak, done = [0, 0], threading.Event()
sampler = threading.Thread(target=sample_children, args=(peak, done), daemon=True)
sampler.start()
def cpu_seconds(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime

before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cpu_before = cpu_seconds(resource.RUSAGE_SELF)
started = time.perf_counter()
response = client.post("/upload/model", data={"file": (io.BytesIO(body), model.name)},
                       content_type="multipart/form-data")
seconds = time.perf_counter() - started
cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu_before
done.set()
sampler.join()
print(json.dumps({
    "status": response.status_code, "error": (response.get_json() or {}).get("error"), "seconds": seconds, "cpu_s": cpu,
    "child_cpu_s": cpu_seconds(resource.RUSAGE_CHILDREN),
    "before_mb": before_kb / 1024, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "child_peak_mb": peak[0] / 2**20, "together_mb": peak[1] / 2**20, **counts,
}))
"""


def build_models(folder: Path, sizes: list[str]) -> list[Path]:
    """Return the .pt and .onnx of each size in folder, building the missing ones with ultralytics."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for size in sizes:
        pt, exported = folder / f"yolov8{size}.pt", folder / f"yolov8{size}.onnx"
        steps = (("build", f"yolov8{size}.yaml", str(pt)), ("export", str(pt), str(exported)))
        for (command, *args), target in zip(steps, (pt, exported)):
            if not target.is_file():
                subprocess.run([sys.executable, "-m", "bench.ultralytics_reference", command, *args],
                               cwd=ROOT, check=True, timeout=BUILD_TIMEOUT_S, capture_output=True)
        files += [pt, exported]
    return files


def accept_once(repo: Path, model: Path) -> dict:
    """Upload model once in a fresh child running repo's code; return what the child measured."""
    with tempfile.TemporaryDirectory(prefix="acceptance-") as uploads:
        child = subprocess.run([sys.executable, "-c", CHILD, str(model), uploads], cwd=repo, text=True,
                               capture_output=True, timeout=UPLOAD_TIMEOUT_S, env={"YOLO_OFFLINE": "1",
                               "PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)})
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"measuring {model.name} failed:\n{child.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if result["status"] != 201:
        raise RuntimeError(f"{model.name} was refused ({result['status']}): {result['error']}")
    return result


def summary_row(model: Path, runs: list[dict]) -> str:
    """One line of the table: medians (and the spread of the wall time) over the repeats."""
    seconds = [run["seconds"] for run in runs]

    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    return (f"{model.name:<13} {model.stat().st_size / 2**20:7.1f} {median('seconds'):8.2f} "
            f"{min(seconds):6.2f}-{max(seconds):<6.2f} {median('cpu_s'):7.2f} {median('child_cpu_s'):7.2f} "
            f"{median('before_mb'):8.0f} {median('peak_mb'):8.0f} "
            f"{median('peak_mb') - median('before_mb'):7.0f} {median('child_peak_mb'):8.0f} "
            f"{median('together_mb'):8.0f} "
            f"{runs[0]['unpickle']:>5} {runs[0]['onnx_load']:>5}")


def read_costs(models: list[Path], repeats: int) -> None:
    """Print what one read of each file costs here (the fastest of repeats, CPU seconds): what a repeat read wastes."""
    import onnx

    from server.models.checkpoint import read_checkpoint

    print("one read, fastest of the repeats (CPU s): .pt by the inert reader, .onnx by onnx.load")
    for model in models:
        read = read_checkpoint if model.suffix == ".pt" else lambda path: onnx.load(str(path))
        costs = []
        for _ in range(repeats):
            started = time.process_time()
            read(model)
            costs.append(time.process_time() - started)
        print(f"{model.name:<13} {min(costs):6.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose server code is measured")
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "acceptance-cost-models",
                        help="where the .pt/.onnx files are built (kept for the next run)")
    parser.add_argument("--sizes", default="n,s,m", help="YOLOv8 sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    models = build_models(args.models, args.sizes.split(","))
    print(f"code: {args.repo.resolve()}, {args.repeats} fresh child process(es) per file; medians")
    print(f"{'file':<13} {'MB':>7} {'wall s':>8} {'range':<13} {'cpu s':>7} {'trial s':>7} {'rss0 MB':>8} "
          f"{'peak MB':>8} {'+MB':>7} "
          f"{'trial MB':>8} {'both MB':>8} {'pkl':>5} {'onnx':>5}")
    for model in models:
        runs = [accept_once(args.repo, model) for _ in range(args.repeats)]
        print(summary_row(model, runs), flush=True)
    read_costs(models, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
