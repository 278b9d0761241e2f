"""Draw a Chrome trace from GET /api/trace as a timeline PNG (one lane per thread), and summarise it.

    python -m tools.trace_plot trace.json [timeline.png] [--frames 6]

For a picture of a trace where Perfetto (ui.perfetto.dev) or chrome://tracing are not at hand. It also
prints the median ms of each stage per frame and, for a trace taken with onnx=1, the operator types
that take the inference's time (ms per frame): the profile that shows where the floor is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STAGE_COLOURS = {
    "decode": "#1ba1e2", "preprocess": "#9b59d0", "inference": "#f07b1d", "postprocess": "#e5b800",
    "track": "#d35400", "draw": "#27ae60", "encode": "#e84393",
}
OPERATOR_COLOUR = "#b0b0b0"


def lanes(trace: dict, frames: int | None) -> tuple[dict[str, list[dict]], list[dict], float]:
    """Group stage spans by thread name (and operator spans apart); return them with the time origin (us)."""
    events = trace["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    stages = [e for e in events if e.get("ph") == "X" and e.get("cat") == "stage"]
    if frames:
        first = sorted({e["args"]["frame"] for e in stages})[:frames]
        stages = [e for e in stages if e["args"]["frame"] in first]
    origin = min(e["ts"] for e in stages)
    end = max(e["ts"] + e["dur"] for e in stages)
    by_thread: dict[str, list[dict]] = {}
    for event in stages:
        by_thread.setdefault(names.get((event["pid"], event["tid"]), str(event["tid"])), []).append(event)
    operators = [e for e in events if e.get("cat") == "Node" and origin <= e["ts"] <= end]
    return by_thread, operators, origin


def draw(trace: dict, path: Path, frames: int | None = 6) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    by_thread, operators, origin = lanes(trace, frames)
    order = [name for name in ("frame-source", "stream-detect", "stream-render") if name in by_thread]
    order += [name for name in by_thread if name not in order]
    labels = order + (["onnxruntime operators"] if operators else [])
    figure, axes = plt.subplots(figsize=(12, 1.1 + 0.55 * len(labels)), dpi=110)
    for lane, name in enumerate(order):
        for event in by_thread[name]:
            start, width = (event["ts"] - origin) / 1000, event["dur"] / 1000
            axes.broken_barh([(start, width)], (lane - 0.38, 0.76), color=STAGE_COLOURS.get(event["name"], "#888"))
            if width > 6:
                axes.text(start + width / 2, lane, f"#{event['args']['frame']}", ha="center", va="center",
                          fontsize=7, color="white")
    if operators:
        lane = len(order)
        spans = [((e["ts"] - origin) / 1000, max(e["dur"] / 1000, 0.01)) for e in operators]
        axes.broken_barh(spans, (lane - 0.38, 0.76), color=OPERATOR_COLOUR, edgecolor="#666", linewidth=0.2)
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set_xlabel("ms since the first span")
    shown = len({e["args"]["frame"] for spans in by_thread.values() for e in spans})
    axes.set_title(f"GET /api/trace: {shown} frames, one lane per thread (frame numbers on the spans)")
    handles = [Patch(color=colour, label=stage) for stage, colour in STAGE_COLOURS.items()]
    if operators:
        handles.append(Patch(color=OPERATOR_COLOUR, label="ORT operator"))
    axes.legend(handles=handles, ncol=len(handles), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def summary(trace: dict) -> str:
    """Median ms per stage per frame, and ms per frame of each ONNX Runtime operator type (largest first)."""
    import statistics  # noqa: PLC0415

    events = trace["traceEvents"]
    stages: dict[str, list[float]] = {}
    for event in events:
        if event.get("ph") == "X" and event.get("cat") == "stage":
            stages.setdefault(event["name"], []).append(event["dur"] / 1000)
    frames = trace.get("otherData", {}).get("frames") or 1
    lines = [f"{frames} frames; median ms per frame by stage:"]
    lines += [f"  {stage:<12} {statistics.median(values):8.2f}" for stage, values in stages.items()]
    operators: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            kind = event.get("args", {}).get("op_name", "?")
            operators[kind] = operators.get(kind, 0.0) + event["dur"] / 1000
    if operators:
        total = sum(operators.values())
        lines.append(f"ONNX Runtime operators, ms per frame (all: {total / frames:.2f}):")
        for kind, ms in sorted(operators.items(), key=lambda item: -item[1])[:10]:
            lines.append(f"  {kind:<22} {ms / frames:8.2f}  {ms / total:5.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.trace_plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", type=Path, help="a trace JSON from GET /api/trace")
    parser.add_argument("png", type=Path, nargs="?", help="draw the timeline here")
    parser.add_argument("--frames", type=int, default=6, help="the first N frames of the trace (0: all)")
    args = parser.parse_args(argv)
    trace = json.loads(args.trace.read_text())
    print(summary(trace))
    if args.png:
        draw(trace, args.png, args.frames or None)


if __name__ == "__main__":
    main()
