"""The meter's emulated side: a folder of its own in the Pi root, its venvs, and counting one run.

Layout inside the root (PI_ROOT, default /var/tmp/pi-root), all under one folder (default /work-meter):
    project/     this project's files (git ls-files), as .ci/pi/check.sh copies them
    models/      the model files made on the host (bench/aarch64/models.py) and the video
    venv-run/    requirements.txt (+ ncnn): the runtime set, for our pipeline
    venv-peer/   torch (aarch64 CPU build), ultralytics, onnxruntime, ncnn: for Ultralytics' predictor only
A run is `bench/aarch64/qemu-count.sh count` of the root's python3.11 on bench/aarch64/guest.py, with
the counting plugin libmarks.so (bench/aarch64/stage_marks.c) so that one process gives its total and its marks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.aarch64.counts import Variant, parse_marks, parse_total

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PI_ROOT_SH = REPO_ROOT / ".ci" / "pi" / "pi-root.sh"  # the check's root: the meter shares it
QEMU_COUNT_SH = Path(__file__).with_name("qemu-count.sh")
GUEST = "bench/aarch64/guest.py"
PYTHON = "/usr/bin/python3.11"
PEER_TORCH = ("torch==2.9.1", "torchvision==0.24.1")  # the aarch64 CPU build (723 MB)
RUN_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class Place:
    """Where the meter's files are: the root, its folder inside, the qemu build with the plugins."""

    root: Path
    folder: str  # inside the root, e.g. /work-meter
    qemu: Path  # QEMU_COUNT: qemu-aarch64, libinsn.so, libmarks.so

    def host(self, inside: str) -> Path:
        """The host path of a path inside the folder."""
        return self.root / self.folder.lstrip("/") / inside

    def site_packages(self, venv: str) -> Path:
        return self.host(f"{venv}/lib/python3.11/site-packages")


def in_root(place: Place, command: str, log: Path) -> None:
    """Run a shell command inside the root (chroot, as .ci/pi/pi-root.sh runs it), its output to log."""
    with open(log, "a") as out:
        subprocess.run(["bash", str(PI_ROOT_SH), "run", command], check=True, stdout=out, stderr=subprocess.STDOUT,
                       env={**os.environ, "PI_ROOT": str(place.root)})


def copy_project(place: Place, source: Path = REPO_ROOT, into: str = "project") -> None:
    """Copy a project tree into the folder's `into`: a git tree's files (tracked and new, not ignored), or a plain
    folder (such as `git archive` of another branch) whole, less bytecode caches."""
    target = place.host(into)
    shutil.rmtree(target, ignore_errors=True)
    if not (source / ".git").exists():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".venv"))
        return
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=source,
                           check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, files):
        path = source / name.decode()
        if path.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name.decode())


def make_venvs(place: Place, log: Path, peer: bool = True) -> None:
    """The runtime venv (requirements.txt and ncnn) and, for the peer, torch + ultralytics in a venv of its own."""
    folder = place.folder
    if not place.site_packages("venv-run").joinpath("onnxruntime").is_dir():
        in_root(place, f"python3 -m venv {folder}/venv-run && {folder}/venv-run/bin/pip install -q "
                       f"--disable-pip-version-check -r {folder}/project/requirements.txt ncnn", log)
    if peer and not place.site_packages("venv-peer").joinpath("ultralytics").is_dir():
        pip = f"{folder}/venv-peer/bin/pip install -q --disable-pip-version-check"
        # Ultralytics asks for opencv-python, which needs libGL (absent, as on Raspberry Pi OS Lite): the headless
        # build gives the same cv2 without it.
        in_root(place, f"python3 -m venv {folder}/venv-peer && {pip} {' '.join(PEER_TORCH)} && "
                       f"{pip} ultralytics onnxruntime ncnn && {folder}/venv-peer/bin/pip uninstall -q -y opencv-python "
                       f"&& {pip} --force-reinstall --no-deps opencv-python-headless", log)


def write_ncnn_cache(tree: Path, onnx_path: Path) -> None:
    """Write the server's NCNN model of the root's ONNX copy with that tree's own writer, on the host.

    The files land beside the ONNX, named after it and stamped with its size and mtime, so the emulated runs find
    them cached instead of each writing them (which would differ between the short and the long run).
    """
    script = ("import sys; from server.models.ncnn import ncnn_model_for; build = ncnn_model_for(sys.argv[1]); "
              "print(build.reason or 'ok'); sys.exit(build.files is None)")
    run_in_tree(tree, script, [str(onnx_path)], f"no NCNN model of {onnx_path.name}", timeout=900)


def run_in_tree(tree: Path, script: str, args: list[str], failure: str, timeout: float) -> None:
    """Run a Python script with a project tree's own code on the host; raise RuntimeError(failure + output tail)."""
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=tree, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tree)}, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{failure}: {(done.stdout + done.stderr)[-500:]}")


NCNN_INT8_SCRIPT = """
import sys
from server.models.ncnn import ncnn_model_for
from server.models.ncnn.int8 import KEEP_HEAD, KEEP_WINOGRAD, build_ncnn_int8
from server.models.tuning.calibration import split_frames
from server.vision import processing
from server.vision.detector import Detector
from server.vision.sources.base import CALIBRATION_FRAMES
from server.vision.sources.file import sample_frames

onnx, video = sys.argv[1], sys.argv[2]
frames = sample_frames(video, CALIBRATION_FRAMES)
calibration, _ = split_frames(frames)
input_hw = Detector(onnx, 1).input_hw(frames[0].shape[:2], 640)
tensors = [processing.preprocess(frame, input_hw)[0] for frame in calibration]
print(build_ncnn_int8(ncnn_model_for(onnx), tensors, keep=frozenset({KEEP_HEAD, KEEP_WINOGRAD})))
"""


def write_ncnn_int8(tree: Path, onnx_path: Path, video: Path) -> None:
    """Write the NCNN int8 model the auto job makes on a Pi 5 (calibrated on the video's frames at 640; the 3x3
    stride-1 convolutions and the head kept float, as on an ARM CPU with dot product) beside the root's ONNX."""
    run_in_tree(tree, NCNN_INT8_SCRIPT, [str(onnx_path), str(video)], f"no NCNN int8 model of {onnx_path.name}",
                timeout=1800)


@dataclass
class RunRecord:
    """One counted process: what ran, its instruction total and marks, and what it detected."""

    variant: str
    frames: int
    total: int
    marks: list[list[int]]
    detections: list[dict]
    seconds: float
    command: list[str]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        return cls(**json.loads(path.read_text()))


def guest_args(variant: Variant, frames: int, models: dict[str, str]) -> list[str]:
    """The guest's command line for a variant (models: host paths inside the root, by role, with the videos)."""
    video = models["still" if variant.scene == "still" else "video"]
    args = ["--video", video, "--frames", str(frames)]
    if variant.kind == "ultralytics":
        return ["ultralytics", "--model", models[f"ultralytics-{variant.engine}"], *args]
    args += ["--imgsz", str(variant.imgsz), "--engine", variant.engine, "--precision", variant.precision,
             "--detect-every", str(variant.detect_every)]
    role = "slim-" if variant.model == "slim" else ""
    if role and f"{role}fp32" not in models:
        raise RuntimeError(f"{variant.name}: no slimmed model in the root: run prepare with --slim SLIM.pt")
    if variant.engine == "ort":
        return ["ours", "--model", models[f"{role}fp32"], "--int8", models[f"{role}int8"], *args]
    return ["ours", "--model", models[f"{role}fp32"], *args]


def source_tree(place: Place, variant: Variant, host: bool = False) -> Path:
    """The tree whose code a variant runs: `project-ncnn` for NCNN rows when prepare got --ncnn-tree, else this one
    (its copy in the root, or on the host itself)."""
    other = place.host("project-ncnn")
    if (variant.kind, variant.engine) == ("ours", "ncnn") and other.is_dir():
        return other
    return REPO_ROOT if host else place.host("project")


def count_run(place: Place, variant: Variant, frames: int, models: dict[str, str], work: Path) -> RunRecord:
    """Count one emulated process of variant over frames; raise RuntimeError with its output's tail if it fails."""
    venv = "venv-peer" if variant.kind == "ultralytics" else "venv-run"
    project = place.host("project")
    source = source_tree(place, variant)
    env_words = [f"PYTHONPATH={source}:{place.site_packages(venv)}", f"YOLO_CONFIG_DIR={place.host('ultralytics')}",
                 "YOLO_OFFLINE=1", "PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1", "MPLBACKEND=Agg", f"MPLCONFIGDIR={place.host('mpl')}"]
    log = work / f"{variant.slug}-f{frames}.plugin.log"
    # The guest is always this tree's (an older tree has none); the code it counts is the source tree's.
    command = ["bash", str(QEMU_COUNT_SH), "count", PYTHON, str(project / GUEST),
               *guest_args(variant, frames, models)]
    env = {**os.environ, "PI_ROOT": str(place.root), "QEMU_COUNT": str(place.qemu), "COUNT_PLUGIN": "marks",
           "COUNT_LOG": str(log), "COUNT_ENV": " ".join(env_words)}
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    seconds = time.monotonic() - started
    plugin = log.read_text() if log.exists() else ""
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-1500:]
        raise RuntimeError(f"{variant.name} x{frames} failed ({done.returncode}): {tail}")
    result = next((json.loads(line) for line in reversed(done.stdout.splitlines()) if line.startswith('{"frames"')),
                  None)
    if result is None:
        raise RuntimeError(f"{variant.name} x{frames}: the guest printed no detections")
    log.unlink(missing_ok=True)
    marks = [[m.code, m.vcpu, m.vcpu_count, m.total] for m in parse_marks(plugin)]
    return RunRecord(variant.name, frames, parse_total(plugin), marks, result["frames"], round(seconds, 1),
                     command[2:])


def host_detections(variant: Variant, frames: int, models: dict[str, str], tree: Path) -> list[dict]:
    """Run the guest program on the x86 host itself (no emulation, no counting) for its detections."""
    command = [sys.executable, str(REPO_ROOT / GUEST), *guest_args(variant, frames, models)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1"})
    result = next((json.loads(line) for line in reversed(done.stdout.splitlines()) if line.startswith('{"frames"')),
                  None)
    if done.returncode != 0 or result is None:
        raise RuntimeError(f"{variant.name} on the host failed: {(done.stderr or done.stdout)[-800:]}")
    return result["frames"]
