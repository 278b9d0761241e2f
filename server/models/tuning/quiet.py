"""Keep onnxruntime.quantization's chatter out of the server log, without swapping anything process-wide.

The quantizer logs its per-channel notes through the root logger (module-level logging.info(...)) by the hundred,
and its histogram calibrators print() to stdout. Swapping sys.stdout or filtering the root logger from the tuning
thread would hide every other thread's output meanwhile (and race with it). Instead, once, the `logging` and
`print` names inside those modules are pointed at the logger "onnxruntime.quantization", whose own level is
WARNING: its records stay out of the log unless someone lowers that logger's level; nothing else is touched.
"""

from __future__ import annotations

import importlib
import logging
import threading

LOGGER_NAME = "onnxruntime.quantization"
# The modules that log through the root logger or print() (onnxruntime 1.2x-1.3x).
CHATTY_MODULES = (
    "onnxruntime.quantization.base_quantizer",
    "onnxruntime.quantization.onnx_quantizer",
    "onnxruntime.quantization.qdq_quantizer",
    "onnxruntime.quantization.quant_utils",
    "onnxruntime.quantization.quantize",
    "onnxruntime.quantization.calibrate",
    "onnxruntime.quantization.onnx_model",
    "onnxruntime.quantization.operators.matmul",
    "onnxruntime.quantization.operators.gemm",
)

_installed = threading.Lock()
_done = False


class _OwnLogger:
    """Stands in for the `logging` module inside a chatty module: its logging.info() lands on our logger."""

    def __init__(self, logger: logging.Logger):
        self._logger = logger
        self.debug, self.info, self.warning, self.log = logger.debug, logger.info, logger.warning, logger.log
        self.error, self.exception, self.critical = logger.error, logger.exception, logger.critical

    def __getattr__(self, name: str):
        return getattr(logging, name)  # getLogger, INFO, Logger ... as the real module has them


def quiet_quantizer() -> logging.Logger:
    """Route the quantizer's root-logger notes and prints to its own logger at WARNING (once); return that logger."""
    global _done
    logger = logging.getLogger(LOGGER_NAME)
    with _installed:
        if _done:
            return logger
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
        own = _OwnLogger(logger)
        for name in CHATTY_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:  # not in this onnxruntime version
                continue
            if getattr(module, "logging", None) is logging:
                module.logging = own
            module.print = lambda *args, sep=" ", **kwargs: logger.debug(sep.join(map(str, args)))
        _done = True
    return logger

