"""The child side of server.models.trial_run: python -I trial_child.py MODEL HEIGHT WIDTH MEMORY_MB PARENT_PID.

It limits itself before importing ONNX Runtime, runs the model once on zeros and prints one JSON line: the outputs'
shapes and types, or {"error": ...}. It imports nothing of the server and writes no file.
"""

import ctypes
import json
import os
import resource
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
# Not 0: under qemu-user (the aarch64 check's emulated Pi) a file-size limit of 0 kills the process as soon as it
# imports ONNX Runtime, while 1 MB runs; 1 MB still keeps a model from filling the disk.
FILE_LIMIT = 1024 * 1024


def limit_self(memory_mb, parent):
    """Cap this process's address space and file sizes, forbid core dumps, and die with the parent."""
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def run_once(model_path, height, width):
    """Open the model in ONNX Runtime on one thread and run it once on zeros; describe its outputs."""
    import numpy as np  # imported after limit_self, so that importing counts against the budget too
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False  # the arena rounds requests up and keeps them: less headroom
    session = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros((1, 3, height, width), np.float32)}
    started = time.perf_counter()
    outputs = session.run(None, feed)
    ms = (time.perf_counter() - started) * 1000
    return {"outputs": [{"shape": list(o.shape), "dtype": str(o.dtype)} for o in outputs], "ms": round(ms, 2)}


def main(argv):
    model_path, height, width, memory_mb, parent = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    limit_self(memory_mb, parent)
    try:
        result = run_once(model_path, height, width)
    except BaseException as exc:  # anything ONNX Runtime raises is a reason to refuse, reported as such
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]}), flush=True)
        return 1
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
