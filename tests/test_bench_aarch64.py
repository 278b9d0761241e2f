"""The aarch64 meter's pure parts: reading counts, subtracting start-up, stages, ratios, estimates, verdicts.

No emulation here: the meter is a tool like the benchmark (its counting runs take minutes each under qemu);
these tests feed it made-up plugin logs and run records whose right answers are known.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.aarch64 import counts, emulator, guest, table
from bench.aarch64.counts import MARK_CODES, CountError, Mark, MeterRow, Variant
from bench.aarch64.emulator import RunRecord

M = 1_000_000
ROOT = Path(__file__).resolve().parent.parent
DEMO_ONNX = ROOT / "server" / "demo" / "model" / "shapes-yolov8n.onnx"


def marks_log(lines: list[tuple[int, int, int]]) -> str:
    """A libmarks.so log: (code, vcpu, that vcpu's count) per mark; the all-vcpu total is the count + 7."""
    text = "".join(f"mark {code} {vcpu} {count} {count + 7}\n" for code, vcpu, count in lines)
    return text + "total insns: 123456789\n"


def frame_marks(kind: str, start: int, stage_costs: dict[str, int], cost: int) -> tuple[list, int]:
    """Marks of one frame on vcpu 0 whose stages cost stage_costs (each mark itself costs `cost`)."""
    order = [s for s in counts.STAGES if s in stage_costs]
    lines, count = [], start
    for stage in order:
        count += stage_costs[stage] + cost
        lines.append((MARK_CODES[stage], 0, count))
    assert order[-1] == counts.FRAME_END[kind]
    return lines, count


def test_total_is_read_from_the_plugin_log_and_from_qemu_count_output():
    assert counts.parse_total(marks_log([])) == 123456789
    assert counts.parse_total("some output\ninstructions: 42\n") == 42
    with pytest.raises(CountError):
        counts.parse_total("instructions: \n")  # qemu-count.sh's line when the program crashed before exit


def test_marks_are_parsed_in_order():
    parsed = counts.parse_marks("noise\n" + marks_log([(2, 0, 100), (3, 1, 250)]))
    assert parsed == [Mark(2, 0, 100, 107), Mark(3, 1, 250, 257)]
    assert parsed[0].stage == "decode" and parsed[1].stage == "preprocess"


def test_per_frame_subtracts_the_short_run_and_divides_by_the_extra_frames():
    assert counts.per_frame(5_000 * M, 2_000 * M, 5, 2) == 1_000 * M
    with pytest.raises(CountError):
        counts.per_frame(5 * M, 2 * M, 2, 2)
    with pytest.raises(CountError):
        counts.per_frame(2 * M, 2 * M, 5, 2)  # the long run counted nothing more: something is wrong


@pytest.mark.parametrize("every, expected", [(1, (2, 5)), (2, (2, 6)), (3, (2, 5)), (4, (2, 6)), ("auto", (2, 5))])
def test_long_runs_add_whole_detect_every_cycles(every, expected):
    assert counts.run_lengths(every, 2, 3) == expected


def test_stages_of_ours_are_the_mean_over_frames_after_the_short_runs_less_the_marks_own_cost():
    cost = 1_000
    lines = [(MARK_CODES["calibrate"], 0, 10), (MARK_CODES["calibrate"], 0, 10 + cost), (MARK_CODES["begin"], 0, 50_000)]
    count = 50_000
    detect = {"decode": 5 * M, "preprocess": 2 * M, "inference": 900 * M, "postprocess": 4 * M, "track": 1 * M,
              "draw": 3 * M, "encode": 6 * M, "publish": 10_000}
    tracked = {"decode": 5 * M, "track": 2 * M, "draw": 3 * M, "encode": 6 * M, "publish": 10_000}
    for index in range(5):
        frame, count = frame_marks("ours", count, detect if index % 2 == 0 else tracked, cost)
        lines += frame
    lines.append((MARK_CODES["end"], 0, count + 99 * M))  # after the frames: never a stage
    lines.insert(5, (MARK_CODES["inference"], 1, 777 * M))  # another thread's mark is not the frame loop's
    stages, frames = counts.stage_counts(counts.parse_marks(marks_log(lines)), "ours", skip_frames=2)
    assert frames == 3  # frames 2, 3, 4: detected, tracked, detected
    assert stages["inference"] == pytest.approx(900 * M * 2 / 3)
    assert stages["track"] == pytest.approx((1 * M * 2 + 2 * M) / 3)
    assert stages["decode"] == pytest.approx(5 * M)
    assert stages["publish"] == pytest.approx(10_000)


def test_a_stage_marked_twice_in_a_frame_adds_up_and_peer_frames_end_at_encode():
    cost = 0
    lines, count = [(MARK_CODES["begin"], 3, 0)], 0
    for _ in range(3):
        for stage, value in (("decode", 4), ("preprocess", 6), ("inference", 500), ("postprocess", 20),
                             ("postprocess", 5), ("draw", 30), ("encode", 40)):
            count += value + cost
            lines.append((MARK_CODES[stage], 3, count))
    stages, frames = counts.stage_counts(counts.parse_marks(marks_log(lines)), "ultralytics", skip_frames=1)
    assert frames == 2
    assert stages["postprocess"] == 25 and stages["encode"] == 40 and stages["track"] == 0


def test_stage_counts_refuse_a_run_that_never_reached_its_frames():
    with pytest.raises(CountError):
        counts.stage_counts(counts.parse_marks(marks_log([(MARK_CODES["calibrate"], 0, 5)])), "ours", 0)
    begin_only = counts.parse_marks(marks_log([(MARK_CODES["begin"], 0, 5)]))
    with pytest.raises(CountError):
        counts.stage_counts(begin_only, "ours", 0)


def test_guest_marks_with_the_codes_the_host_reads():
    assert guest.CODES == counts.MARK_CODES


@pytest.mark.parametrize("text", ["ort-fp32-640", "ort-int8-320-de3", "ncnn-fp16-416-de2", "ultralytics-onnx-640",
                                  "ultralytics-ncnn-640", "ncnn-fp16-640-deauto", "ncnn-fp16-640-still",
                                  "ncnn-fp16-640-deauto-still", "ncnn-int8-640-de3", "ncnn-fp16-640-slim",
                                  "ort-int8-640-de2-slim"])
def test_variant_names_round_trip(text):
    variant = Variant.parse(text)
    assert variant.name.removeprefix("ours ") == text
    assert Variant.parse(variant.name) == variant


@pytest.mark.parametrize("text", ["ort-fp16-640", "tflite-fp32-640", "ort-fp32", "ort-fp32-640-x3", "ultralytics-pt",
                                  "ultralytics-onnx-320", "ort-fp32-640-de0", "ort-fp32-640-still-de3",
                                  "ort-fp32-640-dequick", "ort-fp32-640-de3-moving", "ort-fp32-640-slim-de2",
                                  "ultralytics-onnx-slim"])
def test_bad_variants_are_refused(text):
    with pytest.raises(ValueError):
        Variant.parse(text)


def test_slim_rows_run_the_slimmed_model_and_say_what_to_do_without_one():
    models = {"fp32": "base.onnx", "int8": "base.int8.onnx", "video": "v.mp4"}
    base, slim = Variant.parse("ort-fp32-640"), Variant.parse("ort-fp32-640-slim")
    assert emulator.guest_args(base, 5, models)[2] == "base.onnx"
    with pytest.raises(RuntimeError, match="prepare with --slim"):
        emulator.guest_args(slim, 5, models)
    models.update({"slim-fp32": "slim.onnx", "slim-int8": "slim.int8.onnx"})
    assert emulator.guest_args(slim, 5, models)[1:5] == ["--model", "slim.onnx", "--int8", "slim.int8.onnx"]


def rows_for(values: dict[str, float]) -> list[MeterRow]:
    rows = []
    for name, per_frame in values.items():
        variant = Variant.parse(name)
        rows.append(MeterRow(variant.name, variant.kind, variant.engine, variant.precision, variant.imgsz,
                             variant.detect_every, per_frame, agreement=None if variant.kind != "ours" else 1.0,
                             scene=variant.scene))
    return rows


def test_ratios_mark_the_same_engine_as_fair_and_estimate_from_its_published_time():
    rows = rows_for({"ultralytics-onnx": 2_000 * M, "ultralytics-ncnn": 500 * M, "ort-fp32-640": 1_000 * M,
                     "ncnn-fp16-640": 250 * M})
    counts.score(rows)
    by_name = {row.name: row for row in rows}
    ours_ort, ours_ncnn = by_name["ours ort-fp32-640"], by_name["ours ncnn-fp16-640"]
    assert (ours_ort.vs_onnx, ours_ort.vs_ncnn, ours_ort.fair) == (2.0, 0.5, "onnx")
    assert ours_ort.estimate_ms == pytest.approx(1_000 / 2_000 * counts.PUBLISHED_PI5_MS["onnx"])
    assert (ours_ncnn.vs_ncnn, ours_ncnn.fair) == (2.0, "ncnn")
    assert ours_ncnn.estimate_ms == pytest.approx(counts.PUBLISHED_PI5_MS["ncnn"] / 2)
    assert ours_ncnn.estimate_fps == pytest.approx(1000 / ours_ncnn.estimate_ms)
    peer = by_name["ultralytics-ncnn-640"]  # a peer against itself: 1x, and its published time back
    assert peer.vs_ncnn == 1.0 and peer.estimate_ms == pytest.approx(counts.PUBLISHED_PI5_MS["ncnn"])
    table_text = counts.format_table(rows, counts.verdicts(rows))
    assert "2.00x fair" in table_text and "0.50x *" in table_text and "estimated" in table_text


def test_without_a_peer_there_is_no_ratio_and_no_estimate():
    rows = rows_for({"ort-fp32-640": 1_000 * M})
    counts.score(rows)
    assert rows[0].vs_onnx is None and rows[0].estimate_ms is None


def verdict_map(rows):
    counts.score(rows)
    return {check.name: check for check in counts.verdicts(rows)}


def test_targets_are_judged_from_the_measured_ratios():
    met = verdict_map(rows_for({"ultralytics-onnx": 2_000 * M, "ultralytics-ncnn": 450 * M,
                                "ncnn-fp16-640": 300 * M, "ort-int8-320-de3": 100 * M}))
    assert met["ours ncnn-fp16-640"].met is True  # 1.5x >= 1.3x
    assert met["best vs ultralytics-ncnn-640"].met is True  # 4.5x >= 3x
    assert met["best vs ultralytics-onnx-640"].met is True  # 20x >= 6x
    assert "ours ort-int8-320-de3" in met["best vs ultralytics-onnx-640"].value
    best = met["best Pi 5 estimate"]  # 100/2000 x 198.7 ms = 9.9 ms: 100 fps
    assert best.met is True and "100.7 fps" in best.value
    gaps = verdict_map(rows_for({"ultralytics-onnx": 2_000 * M, "ultralytics-ncnn": 450 * M,
                                 "ncnn-fp16-640": 400 * M, "ort-int8-640": 600 * M}))
    assert gaps["ours ncnn-fp16-640"].met is False  # 1.125x
    assert gaps["best vs ultralytics-ncnn-640"].met is False and "ours ncnn-fp16-640" in gaps[
        "best vs ultralytics-ncnn-640"].value


def test_a_variant_that_disagrees_is_not_the_best_and_unmeasured_targets_say_so():
    rows = rows_for({"ultralytics-onnx": 2_000 * M, "ort-fp32-640": 1_000 * M, "ort-int8-320-de3": 100 * M})
    rows[2].agreement = 0.5
    checks = verdict_map(rows)
    assert "ours ort-fp32-640" in checks["best vs ultralytics-onnx-640"].value
    assert checks["ours ncnn-fp16-640"].met is None and checks["ours ncnn-fp16-640"].value == "not measured"
    assert checks["best vs ultralytics-ncnn-640"].met is None


def record(variant: str, frames: int, total: int, per_frame_marks: int, detections: list[dict]) -> RunRecord:
    lines = [[MARK_CODES["begin"], 0, 0, 0]]
    count = 0
    for _ in range(frames):
        for stage in ("decode", "inference", "encode", "publish"):
            count += per_frame_marks // 4
            lines.append([MARK_CODES[stage], 0, count, count])
    return RunRecord(variant, frames, total, lines, detections, 1.0, [])


def test_rows_are_built_from_run_records_with_agreement_against_ours_fp32(tmp_path):
    box = {"boxes": [[10, 10, 50, 50]], "scores": [0.9], "class_ids": [1]}
    moved = {"boxes": [[200, 200, 240, 240]], "scores": [0.9], "class_ids": [1]}
    reference, other = Variant.parse("ort-fp32-640"), Variant.parse("ort-int8-320")
    for variant, frames, total, detections in ((reference, 2, 4_000 * M, [box] * 2),
                                               (reference, 5, 7_000 * M, [box] * 5),
                                               (other, 2, 3_000 * M, [moved] * 2),
                                               (other, 5, 3_600 * M, [moved] * 5)):
        record(variant.name, frames, total, 800 * M, detections).save(table.record_path(tmp_path, variant, frames))
    missing = Variant.parse("ncnn-fp16-640")
    (tmp_path / f"{missing.slug}.error").write_text("this project copy has no NCNN engine yet")
    rows = table.build_rows([reference, other, missing], tmp_path, lambda v: (2, 5))
    assert rows[0].per_frame == 1_000 * M and rows[1].per_frame == 200 * M
    assert rows[0].stages["inference"] == 200 * M and rows[0].stages["preprocess"] == 0
    assert counts.unattributed(rows[0]) == pytest.approx(1_000 * M - 4 * 200 * M)
    assert rows[0].agreement == 1.0 and rows[1].agreement == 0.0
    assert rows[2].per_frame is None and "no NCNN engine" in rows[2].error


def guest_on_host(tmp_path: Path, video: Path, frames: int, every: str) -> tuple[list[dict], str]:
    """Run the meter's guest program on this host (no emulation) with the demo model; its frames and stderr."""
    command = [sys.executable, str(ROOT / "bench" / "aarch64" / "guest.py"), "ours", "--model", str(DEMO_ONNX),
               "--video", str(video), "--frames", str(frames), "--imgsz", "320", "--detect-every", every]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])["frames"], done.stderr


@pytest.mark.slow
def test_the_guest_runs_the_servers_keyframer_interpolating_and_skipping_still_frames(tmp_path):
    from server.demo.video import write_demo_video
    from bench.keyframes_eval import write_still_scene

    moving = write_demo_video(tmp_path / "demo.mp4", seconds=1, fps=25)
    shown, log = guest_on_host(tmp_path, moving, 6, "3")
    # keyframes 0 and 3; 1-2 interpolated; 4-5 held, and the newest (5) detected at the end, as at a file's end
    assert len(shown) == 6 and "network runs: 3 in 6 frames" in log
    still = tmp_path / "still.mp4"
    write_still_scene(still, seconds=1)
    shown, log = guest_on_host(tmp_path, still, 6, "auto")
    assert "network runs: 1 in 6 frames" in log  # nothing moves: the first frame's boxes stand
    assert all(frame == shown[0] for frame in shown) and shown[0]["boxes"]


def test_a_row_counted_over_more_frames_is_read_with_its_own_lengths(tmp_path):
    variant = Variant.parse("ncnn-fp16-640-deauto")
    assert table.lengths_on_disk(tmp_path, variant, (2, 5)) == (2, 5)
    for frames in (2, 14):
        table.record_path(tmp_path, variant, frames).write_text("{}")
    table.record_path(tmp_path, Variant.parse("ncnn-fp16-640-deauto-still"), 30).write_text("{}")
    assert table.lengths_on_disk(tmp_path, variant, (2, 5)) == (2, 14)


def test_peers_counted_earlier_fill_the_ratios_of_rows_counted_now():
    earlier = {"rows": [row.as_dict() for row in rows_for({"ultralytics-ncnn": 500 * M, "ort-fp32-640": 9 * M})]}
    now = rows_for({"ncnn-fp16-640-de3": 125 * M})
    merged = table.with_earlier_peers(now, earlier)
    assert [row.name for row in merged] == ["ultralytics-ncnn-640", "ours ncnn-fp16-640-de3"]  # ours never copied
    assert merged[1].vs_ncnn == 4.0 and merged[1].estimate_ms == pytest.approx(counts.PUBLISHED_PI5_MS["ncnn"] / 4)


def test_the_still_scene_is_judged_against_every_frame_on_it_and_is_never_the_best_row():
    checks = verdict_map(rows_for({"ultralytics-ncnn": 450 * M, "ncnn-fp16-640": 385 * M,
                                   "ncnn-fp16-640-still": 380 * M, "ncnn-fp16-640-deauto-still": 19 * M}))
    assert checks["still scene, auto"].met is True and "20.0x" in checks["still scene, auto"].value
    assert checks["best vs ultralytics-ncnn-640"].value.endswith("(ours ncnn-fp16-640)")  # not the still row
    missed = verdict_map(rows_for({"ncnn-fp16-640-still": 380 * M, "ncnn-fp16-640-deauto-still": 40 * M}))
    assert missed["still scene, auto"].met is False
    assert verdict_map(rows_for({"ncnn-fp16-640": 385 * M}))["still scene, auto"].met is None


def test_the_slimmed_model_is_judged_on_its_inference_stage_against_the_unpruned_one():
    rows = rows_for({"ncnn-fp16-640": 385 * M, "ncnn-fp16-640-slim": 260 * M})
    rows[0].stages, rows[1].stages = {"inference": 313 * M}, {"inference": 195 * M}
    rows[1].agreement_x86 = 0.91
    check = verdict_map(rows)["slimmed model"]
    assert check.met is True and check.value == "1.61x, agreement 0.910"  # inference only, not the whole frame
    rows[1].stages = {"inference": 220 * M}
    assert verdict_map(rows)["slimmed model"].met is False
    assert verdict_map(rows_for({"ncnn-fp16-640": 385 * M}))["slimmed model"].met is None


def test_preparing_another_slimmed_model_forgets_the_rows_of_the_earlier_one(tmp_path):
    from bench.aarch64.__main__ import forget_other_slim

    (tmp_path / "runs").mkdir()
    (tmp_path / "x86").mkdir()
    kept = [tmp_path / "runs/ours-ncnn-fp16-640-f2.json", tmp_path / "x86/ours-ncnn-fp16-640.json"]
    slim = [tmp_path / "runs/ours-ncnn-fp16-640-slim-f2.json", tmp_path / "x86/ours-ncnn-fp16-640-slim.json"]
    for path in kept + slim:
        path.write_text("{}")
    forget_other_slim(tmp_path, "aaa.onnx")  # the first slimmed model: its rows are counted next
    forget_other_slim(tmp_path, "aaa.onnx")  # the same again: nothing to forget
    assert all(path.exists() for path in kept + slim)
    forget_other_slim(tmp_path, "bbb.onnx")
    assert all(path.exists() for path in kept) and not any(path.exists() for path in slim)
