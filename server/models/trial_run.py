"""Run an uploaded ONNX model once, in a child process held to a memory and time budget, before accepting it.

The threat: an .onnx file is a program for ONNX Runtime, and parsing it proves nothing about running it. A file of a
few hundred bytes can ask for a 32 GB tensor (ConstantOfShape of 2^33 elements), loop for hours, or use an op that
ONNX Runtime cannot run; a graph can declare a YOLOv8 output shape and produce another. Such a model used to be
accepted and failed (or took GBs) only at stream start.

A thread inside the server can neither be stopped nor held to a memory cap (measured: a 2^28-element
ConstantOfShape run in-process took 6.8 s and 2.1 GB of resident memory), so the run happens in a child process:
it sets RLIMIT_AS (address space) on itself before importing ONNX Runtime, RLIMIT_FSIZE 1 MB and RLIMIT_CORE 0 so
that it can write no large file (nor a core dump), asks the kernel to kill it when the server dies (PR_SET_PDEATHSIG), and
is killed at the deadline. It only prints the shapes and types of the outputs as one JSON line.

The child is server/models/trial_child.py, run as a script by path with python -I, so it imports numpy and
onnxruntime and nothing of the server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from server.models.info import ModelRejected

logger = logging.getLogger(__name__)

CHILD_SCRIPT = Path(__file__).resolve().with_name("trial_child.py")

# A dynamic model is tried at a small, non-square, stride-aligned size: it must take aspect-true inputs.
DYNAMIC_TRIAL_HW = (256, 320)
# The feature-map strides of YOLOv8 detect heads: P3-P5 (the default), P2-P5 (-p2) and P3-P6 (-p6).
HEAD_STRIDES = ((8, 16, 32), (4, 8, 16, 32), (8, 16, 32, 64))
OUT_OF_MEMORY_WORDS = ("bad_alloc", "Failed to allocate", "MemoryError", "Cannot allocate memory")
STDERR_KEPT = 2000  # characters of the child's stderr kept for the log


@dataclass(frozen=True)
class TrialBudget:
    """What one trial run may take: address space in MB and wall-clock seconds."""

    memory_mb: int = 2048
    timeout_s: float = 60.0


DEFAULT_BUDGET = TrialBudget()


def trial_input_hw(fixed_hw: tuple[int, int] | None) -> tuple[int, int]:
    """Return the input size a model is tried at: its own when fixed, else a small aspect-true one."""
    return fixed_hw or DYNAMIC_TRIAL_HW


def anchor_counts(input_hw: tuple[int, int]) -> set[int]:
    """Return the anchor counts a YOLOv8 detect head can output for an input size (one per stride set)."""
    height, width = input_hw
    return {sum(-(-height // s) * -(-width // s) for s in strides) for strides in HEAD_STRIDES}


def trial_run(path: str | Path, class_count: int, fixed_hw: tuple[int, int] | None,
              budget: TrialBudget = DEFAULT_BUDGET) -> float:
    """Run the model once on a blank input within the budget; return its ms, or raise ModelRejected saying why."""
    input_hw = trial_input_hw(fixed_hw)
    started = time.monotonic()
    try:
        child = subprocess.run(
            [sys.executable, "-I", str(CHILD_SCRIPT), str(Path(path).resolve()),
             str(input_hw[0]), str(input_hw[1]), str(budget.memory_mb), str(os.getpid())],
            capture_output=True, text=True, check=False, errors="replace", timeout=budget.timeout_s,
            env=child_environment(), cwd="/", stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ModelRejected(
            f"This ONNX model did not finish one run on a {input_hw[0]}x{input_hw[1]} input within "
            f"{budget.timeout_s:g} s; it cannot stream"
        ) from None
    seconds = time.monotonic() - started
    result = parse_result(child.stdout)
    if child.returncode != 0 or result is None or "error" in result:
        message = (result or {}).get("error") or f"exit code {child.returncode}"
        logger.info("trial run of %s failed after %.2f s: %s\n%s", Path(path).name, seconds, message,
                    child.stderr[-STDERR_KEPT:])
        raise ModelRejected(refusal_text(message, budget))
    check_outputs(result["outputs"], class_count, input_hw)
    logger.info("trial run of %s: %.0f ms inference, %.2f s with the child process, peak %d MB",
                Path(path).name, result["ms"], seconds, result.get("peak_mb", 0))
    return float(result["ms"])


def child_environment() -> dict[str, str]:
    """Return a small environment for the child: one thread, few malloc arenas (they reserve address space)."""
    keep = {key: os.environ[key] for key in ("PATH", "LANG", "LC_ALL", "HOME") if key in os.environ}
    return {**keep, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}


def parse_result(stdout: str) -> dict | None:
    """Return the child's JSON result line, or None when it printed none."""
    for line in reversed(stdout.splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict):
            return result
    return None


def refusal_text(message: str, budget: TrialBudget) -> str:
    """Turn what went wrong in the child into the upload's 400 message."""
    if any(word in message for word in OUT_OF_MEMORY_WORDS):
        return f"This ONNX model needs more than {budget.memory_mb} MB of memory for one small frame; refused"
    return f"ONNX Runtime cannot run this model: {' '.join(message.split())[:300]}"


def check_outputs(outputs: list[dict], class_count: int, input_hw: tuple[int, int]) -> None:
    """Require one float32 1 x (4 + classes) x anchors output with a YOLOv8 head's anchor count."""
    expected_rows, anchors = 4 + class_count, anchor_counts(input_hw)
    shapes = [output["shape"] for output in outputs]
    fits = (
        len(outputs) == 1 and outputs[0]["dtype"] == "float32" and len(shapes[0]) == 3
        and shapes[0][:2] == [1, expected_rows] and shapes[0][2] in anchors
    )  # fmt: skip
    if not fits:
        found = ", ".join(f"{' x '.join(map(str, o['shape']))} {o['dtype']}" for o in outputs)
        raise ModelRejected(
            f"On a {input_hw[0]}x{input_hw[1]} input this ONNX model outputs {found}; a YOLOv8 detect model with "
            f"{class_count} classes outputs 1 x {expected_rows} x {min(anchors)} float32"
        )
