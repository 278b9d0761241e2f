"""The `auto` engine: which engine x precision x threads to time on this device, and which of them to run.

The timing itself is the device's engine timing (server.models.tuning.tune): the same held-back frames, the same
interleaved rounds and the same agreement with ONNX Runtime fp32, so that an NCNN row and an int8 recipe are judged
alike.
This module only says what to time (candidate_keys) and picks among what was measured (pick), both pure.

The pick is the fastest row whose agreement reaches min_agreement, where "faster" means by more than the noise of
either measurement (judging.faster); rows the fastest does not beat beyond that noise count as equally fast and
the most accurate of them wins. ONNX Runtime fp32 is always a row (agreement 1, speed-up 1), so on a device where
nothing beats it beyond the noise, auto keeps it: auto is never slower than fp32 by more than the measured noise.
"""

from __future__ import annotations

from server.models.tuning.judging import TuneRow, faster
from server.vision.engines import ONNXRUNTIME, EngineKey

# On this many cores or more, auto also times one thread fewer than the cores: the render thread then has a core.
MANY_CORES = 4


def thread_counts(threads: int, cores: int) -> list[int]:
    """The inference thread counts auto times: all cores and one fewer on MANY_CORES or more, else the setting's."""
    return [cores, cores - 1] if cores >= MANY_CORES else [threads]


def reference_key(threads: int, cores: int) -> EngineKey:
    """ONNX Runtime fp32 at the first thread count: the row every other is timed and judged against."""
    return EngineKey(ONNXRUNTIME, "fp32", thread_counts(threads, cores)[0])


def candidate_keys(offered: dict[str, list[str]], threads: int, cores: int) -> list[EngineKey]:
    """Every engine x precision x thread count to time besides the reference and ONNX Runtime int8.

    ONNX Runtime int8 is timed as the int8 recipes (at the reference's threads); offered is
    Backends.offered()'s first half (an engine the model cannot run is not in it).
    """
    reference = reference_key(threads, cores)
    keys = []
    for count in thread_counts(threads, cores):
        for engine, precisions in offered.items():
            for precision in precisions:
                key = EngineKey(engine, precision, count)
                if key != reference and not (engine == ONNXRUNTIME and precision == "int8"):
                    keys.append(key)
    return keys


def row_name(key: EngineKey) -> str:
    return f"{key.engine}-{key.precision}-t{key.threads}"


def pick(candidates: list[TuneRow], min_agreement: float) -> TuneRow:
    """Mark and return the row auto runs among candidates (the reference among them); say why of every row."""
    measured = [row for row in candidates if row.error is None and row.speedup is not None]
    qualified = [row for row in measured if row.agreement is not None and row.agreement >= min_agreement]
    fastest = max(qualified, key=lambda row: row.speedup)
    as_fast = [row for row in qualified if not faster(fastest, row)]
    chosen = max(as_fast, key=lambda row: (row.agreement, row.speedup))
    for row in candidates:
        row.picked = row is chosen
        row.why = _why(row, chosen, fastest, min_agreement)
    return chosen


def _why(row: TuneRow, chosen: TuneRow, fastest: TuneRow, min_agreement: float) -> str:
    if row.error is not None:
        return f"could not run: {row.error}"
    if row.speedup is None:
        return "not timed"
    if row is chosen:
        if row is fastest:
            return f"the fastest with agreement >= {min_agreement:.2f}"
        return f"as fast as {fastest.recipe} within the timing noise, and agrees more"
    if row.agreement is None or row.agreement < min_agreement:
        return f"agreement {row.agreement or 0:.2f} is below {min_agreement:.2f}"
    if not faster(chosen, row):
        return f"as fast as {chosen.recipe} within the timing noise, agrees less"
    return f"slower: {row.speedup:.2f}x against {chosen.speedup:.2f}x"
