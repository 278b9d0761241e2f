"""The model card written beside a slimmed model: what it was made from, how, what was measured, the command."""

from __future__ import annotations

import json
from pathlib import Path


def row(name: str, measured: dict) -> str:
    return (f"| {name} | {measured['gflops_640']:.2f} | {measured['params'] / 1e6:.2f} M | {measured['agreement']:.3f} "
            f"| {measured['frames']} | {measured['teacher_boxes']} |")


def step_rows(report: dict) -> list[str]:
    """Every step but the last one's rows, when the target was reached in steps (the last is the table's end)."""
    steps = report.get("steps", [])[:-1]
    return [row(f"step {i} {stage}", step[stage]) for i, step in enumerate(steps, 1) for stage in ("before", "after")]


def markdown(report: dict) -> str:
    teacher, before, after = report["teacher"], report["before"], report["after"]
    removed = 1 - after["gflops_640"] / teacher["gflops_640"]
    target, footage, training = report["target"], report["footage"], report["training"]
    if "student" in target:
        start = f"- Student: `{target['student']}` (not pruned: distilled into it instead)"
    else:
        how = f"{target['ratio']} of each layer's channels" if target["ratio"] is not None else (
            f"FLOPs kept at most {target['flops_kept']} of the teacher's")
        steps = target.get("steps", 1)
        start = (f"- Pruning: {how}, {'global' if target['global'] else 'uniform'} (Torch-Pruning, L2 magnitude)"
                 + (f", reached in {steps} prune-and-distil steps" if steps > 1 else ""))
    epochs = training["history"]
    a_step = " a step" if len(report.get("steps", [])) > 1 else ""
    zoom = f", views zoomed by 1 +- {training['zoom']}" if training.get("zoom") else ""
    per_epoch = sum(e["seconds"] for e in epochs) / max(1, len(epochs))
    cpu_per_epoch = sum(e.get("cpu_seconds", 0) for e in epochs) / max(1, len(epochs))
    lines = [
        f"# {report['outputs']['pt']}: a slimmed YOLOv8 (tools/slim.py)",
        "",
        f"- Teacher: `{report['teacher_file']}`",
        f"- Footage: {', '.join(f'`{s}`' for s in footage['sources'])}; {footage['train_frames']} frames trained on, "
        f"{footage['held_back_frames']} held back (the end of each source, never trained on)"
        + (f"; labelled dataset `{footage['dataset']}`" if footage["dataset"] else ""),
        f"{start}; {removed:.0%} of the teacher's FLOPs removed; saved as {report['outputs']['form']}",
        f"- Fine-tuning: distillation, {training['epochs']} epochs{a_step} at {training['imgsz']} px, "
        f"batch {training['batch']}, teacher boxes above {training['conf']}, raw-output weight "
        f"{training['raw_weight']}{zoom}; {per_epoch:.0f} s an epoch on {training['threads']} CPU threads "
        f"({cpu_per_epoch:.0f} CPU s an epoch)",
        f"- Input size: {training['imgsz']} px, the size it was distilled at, written in the checkpoint "
        "(`train_args.imgsz`, as ultralytics does): the server runs it at that size unless told otherwise",
        "",
        "Agreement: the server's int8 verdict metric (box-weighted mAP50 against the teacher's boxes, or score maps "
        "when the teacher finds too few), teacher and model both run by the server on ONNX Runtime, held-back frames.",
        "",
        "| model | GFLOPs at 640 | parameters | agreement | frames | teacher boxes |",
        "| --- | --- | --- | --- | --- | --- |",
        row("teacher", teacher),
        *step_rows(report),
        row("student, before fine-tuning" if "student" in target else "pruned, before fine-tuning", before),
        row("after distillation", after),
        "",
        f"Judged by: {', '.join(after['judged_by'])} at {after['imgsz']} px.",
        "",
        "Made with:",
        "",
        "```",
        report["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


def write(folder: Path, report: dict) -> None:
    (folder / "slim.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (folder / "MODEL_CARD.md").write_text(markdown(report))
