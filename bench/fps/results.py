"""What a run's rows mean: agreement and speed ratios, the issue's targets, the table and the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.fps.machine import machine_line
from bench.fps.records import REFERENCE, ULTRALYTICS_ONNX, HttpRow, Row, Target
from server.vision.metrics import map50

VIEWER_SHARE = 0.95  # of its frame rate the producer keeps while 8 viewers read


def score_rows(rows: list[Row]) -> None:
    """Fill each row's agreement with the reference row and its speed ratio over Ultralytics-ONNX."""
    reference = next((r for r in rows if r.name == REFERENCE), None)
    baseline = next((r for r in rows if r.name == ULTRALYTICS_ONNX), None)
    for row in rows:
        if reference is not None:
            count = min(len(row.detections), len(reference.detections))
            score = map50(row.detections[:count], reference.detections[:count])
            row.agreement = None if np.isnan(score) else round(score, 4)
        peer = row.peer_fps or (baseline.fps if baseline is not None else 0.0)
        if peer > 0 and row.name != ULTRALYTICS_ONNX:
            row.ratio = round(row.fps / peer, 2)
        elif row.name == ULTRALYTICS_ONNX:
            row.ratio = 1.0


def evaluate_targets(rows: list[Row], http: list[HttpRow]) -> list[Target]:
    """Check this run against the issue's targets (ratios are against Ultralytics-ONNX at 640)."""
    by_name = {row.name: row for row in rows}

    def ratio_target(name: str, goal: float, min_agreement: float | None = None) -> Target:
        row = by_name.get(name)
        text = f">= {goal}x Ultralytics-ONNX" + (f", agreement >= {min_agreement}" if min_agreement else "")
        if row is None or row.ratio is None:
            return Target(name, text, "not measured", None)
        met = row.ratio >= goal and (min_agreement is None or (row.agreement or 0) >= min_agreement)
        value = f"{row.ratio:.2f}x" + (f", agreement {row.agreement}" if min_agreement else "")
        return Target(name, text, value + ("" if met else f" (gap {_gap(row, goal, min_agreement)})"), met)

    targets = [ratio_target("fp32-640", 2.0), ratio_target("int8-640", 3.0, 0.90), ratio_target("int8-320-de3", 15.0)]
    targets += latency_targets(rows)
    for item in http:
        name = f"http {item.variant} x{item.viewers}"
        goal = f">= {VIEWER_SHARE:.0%} of its fps with no viewer"
        if item.error or not item.idle_fps:
            targets.append(Target(name, goal, item.error or "not measured", None))
            continue
        share = item.server_fps / item.idle_fps
        targets.append(Target(name, goal, f"{share:.0%} ({item.server_fps:.1f} of {item.idle_fps:.1f} fps, "
                                          "server's frame counter)", share >= VIEWER_SHARE))
    return targets


def latency_targets(rows: list[Row]) -> list[Target]:
    """The pipelined producer's frame latency may exceed the serial loop's by one frame interval at most."""
    by_name = {row.name: row for row in rows}
    targets = []
    for row in rows:
        serial = by_name.get(f"{row.name} serial")
        if serial is None or row.latency_ms is None or serial.latency_ms is None or not row.fps:
            continue
        allowed = serial.latency_ms + 1000 / row.fps
        targets.append(Target(f"{row.name} latency", "<= serial + one frame interval",
                              f"{row.latency_ms:.1f} ms vs serial {serial.latency_ms:.1f} + {1000 / row.fps:.1f} ms; "
                              f"fps {row.fps:.1f} vs {serial.fps:.1f} serial", row.latency_ms <= allowed))
    return targets


def _gap(row: Row, goal: float, min_agreement: float | None) -> str:
    parts = []
    if row.ratio < goal:
        parts.append(f"{goal - row.ratio:.2f}x short")
    if min_agreement is not None and (row.agreement or 0) < min_agreement:
        parts.append(f"agreement {min_agreement - (row.agreement or 0):.3f} short")
    return ", ".join(parts)


def format_table(rows: list[Row], http: list[HttpRow], targets: list[Target], machine: dict) -> str:
    """Render the results as a plain-text table, the machine's CPU and flags above the figures and the targets."""
    where = machine_line(machine)
    stages = ("decode", "preprocess", "inference", "postprocess", "track", "draw", "encode")
    header = (f"{'variant':<22}" + "".join(f"{s[:7]:>9}" for s in stages)
              + f"{'fps':>8}{'latency':>9}{'peer fps':>10}{'vs UL-ONNX':>12}{'mAP50':>8}")
    legend = ("ms per frame (mean; tracked frames skip inference); rows ran interleaved, a segment at a time, "
              "each of ours between two Ultralytics-ONNX segments (peer fps: their mean); latency: median "
              "decode to publish")
    lines = [where, legend, header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"{row.stage_ms[s]:>9.1f}" if s in row.stage_ms else f"{'-':>9}" for s in stages)
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        agreement = f"{row.agreement:.3f}" if row.agreement is not None else "-"
        latency = f"{row.latency_ms:.1f}" if row.latency_ms is not None else "-"
        peer = f"{row.peer_fps:.1f}" if row.peer_fps is not None else "-"
        lines.append(f"{row.name:<22}{cells}{row.fps:>8.1f}{latency:>9}{peer:>10}{ratio:>12}{agreement:>8}")
    if http:
        cap = next((item.viewer_cap for item in http if item.viewer_cap is not None), None)
        lines += ["", "the real server over HTTP (run.py, as production starts it; realtime off); producer fps by "
                  "its own frame counter" + (f"; viewers capped at {cap:g} fps" if cap else ""),
                  f"{'variant':<24}{'viewers':>8}{'fps/viewer':>12}{'producer fps':>14}{'no viewer':>11}"]
        for item in http:
            idle = f"{item.idle_fps:.1f}" if item.idle_fps else "-"
            shown = item.error[:60] if item.error else f"{item.mean_fps:>12.1f}{item.server_fps:>14.1f}{idle:>11}"
            lines.append(f"{item.variant:<24}{item.viewers:>8}" + (f"  {shown}" if item.error else shown))
    lines += ["", f"targets (Ultralytics-ONNX = its default export, 640x640, same run) on {where}"]
    for target in targets:
        state = {True: "met", False: "GAP", None: "n/a"}[target.met]
        lines.append(f"  [{state:^4}] {target.name:<24} {target.goal:<42} {target.value}")
    return "\n".join(lines)


def draw_plot(rows: list[Row], path: Path) -> None:
    """Save a speed-vs-agreement scatter plot of every row, with the speed targets marked."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    baseline = next((r for r in rows if r.name == ULTRALYTICS_ONNX), None)
    if baseline is not None and baseline.fps > 0:
        for goal in (1.0, 2.0, 3.0, 15.0):
            axes.axvline(baseline.fps * goal, color="tab:gray", linestyle=":", linewidth=1)
            axes.annotate(f"{goal:g}x UL-ONNX", (baseline.fps * goal, 0.02), rotation=90, fontsize=7,
                          color="tab:gray", xycoords=("data", "axes fraction"))
    for index, row in enumerate(rows):
        agreement = row.agreement if row.agreement is not None else 0.0
        marker = "s" if row.kind == "ultralytics" else "o"
        color = "tab:gray" if row.kind == "ultralytics" else "tab:orange" if row.name.startswith("int8") else "tab:blue"
        label = row.name if row.agreement is not None else f"{row.name} (no agreement: fp32 saw nothing)"
        axes.scatter(row.fps, agreement, marker=marker, color=color, s=50)
        offset = (5, 4) if index % 2 == 0 else (5, -11)  # alternate, so neighbours' labels do not overlap
        axes.annotate(label, (row.fps, agreement), textcoords="offset points", xytext=offset, fontsize=8)
    axes.set_xscale("log")
    speeds = [row.fps for row in rows if row.fps > 0] or [1.0]
    axes.set_xlim(min(speeds) / 1.5, max(speeds) * 4)  # room for the labels on the right
    axes.set_ylim(-0.05, 1.08)
    axes.set_xlabel("end-to-end frames per second, decode to JPEG (log scale)")
    axes.set_ylabel(f"agreement: mAP50 vs {REFERENCE}")
    axes.set_title("speed vs agreement (squares: Ultralytics; blue: fp32; orange: int8)")
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
