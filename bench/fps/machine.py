"""Where the benchmark ran: the CPU, its speed flags, the thread count and the ONNX Runtime version."""

from __future__ import annotations

import os
import platform
from pathlib import Path

SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
               "asimd", "asimddp", "i8mm", "sve", "bf16")


def machine_summary(threads: int) -> dict:
    """Describe where the benchmark ran."""
    import onnxruntime  # noqa: PLC0415

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith(("model name", "Model"))), "")
    except OSError:
        pass
    return {"cpu": cpu or platform.processor(), "machine": platform.machine(), "cores": os.cpu_count(),
            "flags": cpu_flags(), "threads": threads, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__}


def cpu_flags() -> list[str]:
    """The CPU features that decide which kernels ONNX Runtime runs (SIMD width, int8 dot products)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    found = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            found.update(line.split(":", 1)[1].split())
    return [flag for flag in SPEED_FLAGS if flag in found]


def machine_line(machine: dict) -> str:
    flags = " ".join(machine.get("flags") or []) or "unknown"
    return (f"{machine.get('cpu') or machine.get('machine')}, {machine.get('cores')} cores, flags: {flags}, "
            f"{machine.get('threads')} ORT threads, onnxruntime {machine.get('onnxruntime')}")
