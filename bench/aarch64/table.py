"""Turn the counted runs into the meter's rows: per-frame counts, stages, agreement, ratios and estimates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.aarch64.counts import (
    CountError,
    Mark,
    MeterRow,
    Variant,
    per_frame,
    score,
    stage_counts,
)
from bench.aarch64.emulator import RunRecord

REFERENCE = "ours ort-fp32-640"


def record_path(runs: Path, variant: Variant, frames: int) -> Path:
    return runs / f"{variant.slug}-f{frames}.json"


def lengths_on_disk(runs: Path, variant: Variant, default: tuple[int, int]) -> tuple[int, int]:
    """The shortest and longest run of a variant on disk (a row counted with another --extra, such as an auto row
    over more frames), or default when fewer than two are there."""
    frames = sorted(int(tail) for p in runs.glob(f"{variant.slug}-f*.json")
                    if (tail := p.stem.rsplit("-f", 1)[1]).isdigit())
    return (frames[0], frames[-1]) if len(frames) >= 2 else default


def detections_of(frames: list[dict]):
    from server.vision.processing import Detections  # noqa: PLC0415

    return [Detections(np.array(f["boxes"], np.float32).reshape(-1, 4), np.array(f["scores"], np.float32),
                       np.array(f["class_ids"], np.int64)) for f in frames]


def agreement(frames: list[dict], reference: list[dict]) -> float | None:
    """mAP50 of a run's detections against the reference run's, on the frames both ran."""
    from server.vision.metrics import map50  # noqa: PLC0415

    count = min(len(frames), len(reference))
    value = map50(detections_of(frames[:count]), detections_of(reference[:count]))
    return None if np.isnan(value) else round(float(value), 4)


def with_earlier_peers(rows: list[MeterRow], earlier: dict) -> list[MeterRow]:
    """Rows with the peers' counts of an earlier table (its JSON) put first where these rows lack them, re-scored."""
    counted = {row.name for row in rows if row.per_frame}
    fields = MeterRow.__dataclass_fields__
    peers = [MeterRow(**{k: v for k, v in row.items() if k in fields}) for row in earlier["rows"]
             if row["kind"] == "ultralytics" and row["per_frame"] and row["name"] not in counted]
    rows = peers + [row for row in rows if row.name not in {peer.name for peer in peers}]
    score(rows)
    return rows


def build_rows(variants: list[Variant], runs: Path, lengths, x86: dict[str, list[dict]] | None = None) -> list[MeterRow]:
    """A row per variant with both runs on disk (lengths(variant) -> (short, long) frames); others say what is missing."""
    records: dict[str, tuple[RunRecord, RunRecord]] = {}
    rows = []
    for variant in variants:
        short, long = lengths(variant)
        paths = record_path(runs, variant, short), record_path(runs, variant, long)
        row = MeterRow(variant.name, variant.kind, variant.engine, variant.precision, variant.imgsz,
                       variant.detect_every, None, scene=variant.scene)
        rows.append(row)
        failed = runs / f"{variant.slug}.error"
        if not all(p.exists() for p in paths):
            row.error = failed.read_text()[:300] if failed.exists() else "not counted yet"
            continue
        pair = RunRecord.load(paths[0]), RunRecord.load(paths[1])
        records[variant.name] = pair
        try:
            row.per_frame = per_frame(pair[1].total, pair[0].total, pair[1].frames, pair[0].frames)
            marks = [Mark(*m) for m in pair[1].marks]
            row.stages, _ = stage_counts(marks, variant.kind, skip_frames=pair[0].frames)
        except CountError as error:
            row.error = str(error)
    reference = records.get(REFERENCE)
    for row in rows:
        if reference is not None and row.name in records and row.scene == "demo":  # the reference ran the demo
            row.agreement = agreement(records[row.name][1].detections, reference[1].detections)
    x86 = x86 or {}
    for row in rows:
        if REFERENCE in x86 and row.name in x86 and row.scene == "demo":
            row.agreement_x86 = agreement(x86[row.name], x86[REFERENCE])
    score(rows)
    return rows
