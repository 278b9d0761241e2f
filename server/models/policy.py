"""What runs: the engine policy in one place, from the settings, the engines a model offers and the device's verdict.

EnginePolicy.run_for(settings) answers "what runs now" as one EngineRun; it keeps no state about a stream, so one
policy serves every caller that hands it settings (a stream, the benchmark's rows, several cameras on one loop).
Its rules:
- engine auto runs the row this device's engine timing picked (server.models.choice), while that row can run;
  ONNX Runtime fp32 at the settings' threads until the device has timed the engines (and after a reset);
- a chosen engine the model cannot run (NCNN not translatable) runs ONNX Runtime instead;
- a precision not made yet (int8 before the timing made it) runs fp32 on the same engine meanwhile.
It also says when the settings want the engine timing and how settings changes pick an engine (with_engine).
"""

from __future__ import annotations

from collections.abc import Callable

from server.models.backends import Backends
from server.models.backends.base import EngineRun
from server.models.choice import reference_key
from server.vision.engines import AUTO, ONNXRUNTIME, EngineKey
from server.vision.settings import Settings

Verdict = Callable[[], dict | None]  # what the timing picked: {engine, precision, threads, row, why}, None untimed


def wants_timing(settings: Settings) -> bool:
    """Whether the settings need the device's engine timing: engine auto, or ONNX Runtime int8 (its recipes)."""
    return settings.engine == AUTO or (settings.engine == ONNXRUNTIME and settings.precision == "int8")


def with_engine(current: Settings, changes: dict, offered: dict[str, list[str]]) -> dict:
    """Return changes with the engine a lone precision change picks under engine auto.

    Choosing a precision is choosing an engine: the first that offers it (ONNX Runtime first), as before auto.
    """
    if current.engine != AUTO or "precision" not in changes or "engine" in changes:
        return changes
    precision = changes["precision"]
    engine = next((name for name, precisions in offered.items() if precision in precisions), ONNXRUNTIME)
    return {**changes, "engine": engine}


class EnginePolicy:
    """Answer what runs for given settings, for one model's engines and this device's verdict on them."""

    def __init__(self, backends: Backends, verdict: Verdict = lambda: None):
        self.backends = backends
        self.verdict = verdict

    def key_for(self, settings: Settings) -> EngineKey:
        """The engine x precision x threads that runs for these settings now."""
        if settings.engine == AUTO:
            return self._auto_key(settings)
        backend = self.backends.by_name.get(settings.engine)
        if backend is None or backend.unavailable() is not None:
            backend = self.backends.default
        precision = settings.precision if backend.ready(settings.precision) else "fp32"
        return EngineKey(backend.name, precision, settings.threads)

    def run_for(self, settings: Settings) -> EngineRun:
        """What runs for these settings now, with the model file it loads (a new file is a new run)."""
        return self.backends.run(self.key_for(settings))

    def _auto_key(self, settings: Settings) -> EngineKey:
        verdict = self.verdict()
        if verdict:
            key = EngineKey(verdict["engine"], verdict["precision"], verdict["threads"])
            if self.backends.runnable(key):
                return key
        return EngineKey(ONNXRUNTIME, "fp32", settings.threads)

    @staticmethod
    def timing_threads(settings: Settings, cores: int) -> int:
        """The threads of the timing's reference row (ONNX Runtime fp32), which every other row is judged against."""
        return reference_key(settings.threads, cores).threads
