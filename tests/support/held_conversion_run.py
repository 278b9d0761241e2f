"""run.py with a .pt conversion that holds, fully written, just before its rename into place, until killed.

For the crash test: the window "the server dies while a conversion is writing its result" is made here, not
waited for. Run as `python -m tests.support.held_conversion_run <run.py flags>`; the log says HOLDING once the
converted ONNX sits complete under its temporary name in the cache folder.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from pathlib import Path

import run
from server import files

HOLDING = "HOLDING the converted model before its rename"
logger = logging.getLogger("held-conversion")
_write = files.atomic_write


@contextlib.contextmanager
def _held_in_cache(target):
    with _write(target) as handle:
        yield handle
        if Path(target).parent.name == "cache" and Path(target).suffix == ".onnx":  # not the NCNN files beside
            handle.flush()
            logger.warning("%s: %s", HOLDING, Path(target).name)
            threading.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    files.atomic_write = _held_in_cache  # write_bytes, which the converter calls, looks it up at each call
    run.main(sys.argv[1:])
