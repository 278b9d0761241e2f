"""The auto engine: what it times (pure), what it picks (pure), and the whole job on the demo model.

The job is the device's engine timing, with every engine the model offers timed in the same rounds: the table it
leaves is in status (precision.timing.rows, precision.timing.auto), the stream runs its pick, a restart reuses it,
and stop cancels it.
"""

from __future__ import annotations

import pytest

from harness.client import upload
from harness.waiting import status_when
from server import create_app
from server.config import Config
from server.models.choice import candidate_keys, pick, reference_key, thread_counts
from server.models.tuning.judging import TuneRow
from server.vision.engines import EngineKey

OFFERED = {"onnxruntime": ["fp32", "int8"], "ncnn": ["fp32", "fp16", "int8"]}


def test_threads_are_the_settings_below_four_cores_and_all_or_all_but_one_from_four():
    assert thread_counts(2, 2) == [2] and thread_counts(1, 2) == [1]
    assert thread_counts(2, 4) == [4, 3] and thread_counts(8, 8) == [8, 7]
    assert reference_key(2, 4) == EngineKey("onnxruntime", "fp32", 4)


def test_candidates_are_every_offered_engine_and_precision_but_the_reference_and_the_int8_recipes():
    assert candidate_keys(OFFERED, 2, 2) == [EngineKey("ncnn", p, 2) for p in ("fp32", "fp16", "int8")]
    four = candidate_keys(OFFERED, 2, 4)
    assert EngineKey("onnxruntime", "fp32", 4) not in four and EngineKey("onnxruntime", "fp32", 3) in four
    assert len(four) == 3 + 4 and not any(k.engine == "onnxruntime" and k.precision == "int8" for k in four)
    assert candidate_keys({"onnxruntime": ["fp32", "int8"]}, 2, 2) == []  # a model NCNN cannot run


def rows(*specs) -> list[TuneRow]:
    reference = TuneRow("onnxruntime-fp32", 20.0, 1.0, 1.0, noise=0.0, engine="onnxruntime", precision="fp32")
    return [reference, *(TuneRow(name, 20 / speedup if speedup else None, speedup, agreement, noise=noise,
                                 engine="ncnn", precision=name.split("-")[1], error=error)
                         for name, speedup, agreement, noise, error in specs)]


def test_the_fastest_row_within_min_agreement_beyond_the_noise_is_picked_and_every_row_says_why():
    table = rows(("ncnn-fp16", 1.6, 0.97, 0.05, None), ("ncnn-int8", 2.2, 0.80, 0.05, None),
                 ("ncnn-fp32", 0.8, 1.0, 0.05, None), ("ncnn-bad", None, None, None, "boom"))
    chosen = pick(table, 0.90)
    assert chosen.recipe == "ncnn-fp16" and [r.picked for r in table] == [False, True, False, False, False]
    why = {r.recipe: r.why for r in table}
    assert "fastest" in why["ncnn-fp16"] and "below 0.90" in why["ncnn-int8"] and "boom" in why["ncnn-bad"]
    assert "slower" in why["ncnn-fp32"] and "slower" in why["onnxruntime-fp32"]
    # A lower bar admits the faster int8 row.
    assert pick(table, 0.75).recipe == "ncnn-int8"


def test_onnx_runtime_fp32_is_kept_when_nothing_beats_it_beyond_the_noise():
    table = rows(("ncnn-fp16", 1.08, 0.99, 0.10, None), ("ncnn-fp32", 0.9, 1.0, 0.02, None))
    chosen = pick(table, 0.90)
    assert chosen.recipe == "onnxruntime-fp32" and "agrees less" in table[1].why


def start_streaming(client, make_video, demo_onnx):
    upload(client, "/upload/video", make_video(frames=30))
    upload(client, "/upload/model", demo_onnx)
    assert client.post("/api/settings", json={"imgsz": 320, "realtime": False}).status_code == 200
    assert client.post("/stream/start").status_code == 200


@pytest.mark.slow
def test_auto_times_every_engine_streams_its_pick_reuses_it_after_a_restart_and_can_be_overridden(
        tmp_path, make_video, demo_onnx):
    config = Config(uploads=tmp_path / "up", host="127.0.0.1", int8_recipes="u8s8-pc-rr")
    app = create_app(config)
    client = app.test_client()
    assert client.get("/api/status").get_json()["settings"]["engine"] == "auto"  # the default
    start_streaming(client, make_video, demo_onnx)
    seen = []
    status = status_when(client, lambda s: seen.append(s["job"]) or (s["precision"]["timing"] and s["job"] is None))
    assert any(job and job["kind"] == "engine-timing" and "left" in job["message"] for job in seen if job), seen
    report = status["precision"]["timing"]
    table = {(r["engine"], r["precision"]): r for r in report["rows"]}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("ncnn", "fp32"), ("ncnn", "fp16")} <= set(table)
    for row in table.values():
        assert row["error"] is None and row["ms"] > 0 and 0 <= row["agreement"] <= 1 and row["why"], row
    picked = [r for r in report["rows"] if r["picked"]]
    assert len(picked) == 1 and report["auto"]["row"] == picked[0]["recipe"]
    auto = report["auto"]
    status_when(client, lambda s: (s["precision"]["engine"], s["precision"]["active"], s["precision"]["threads"])
             == (auto["engine"], auto["precision"], auto["threads"]), timeout=30)
    runner = app.extensions["detection"].stream.runner
    status_when(client, lambda s: (runner.pipeline.engine, runner.pipeline.precision)
             == (auto["engine"], auto["precision"]), timeout=30)
    client.post("/stream/stop")

    # A restart on the same uploads finds the verdict: no second timing.
    restarted = create_app(config).test_client()
    assert restarted.get("/api/status").get_json()["precision"]["timing"]["auto"] == auto
    assert restarted.post("/stream/start").status_code == 200
    assert restarted.get("/api/status").get_json()["job"] is None
    # Forcing a row of the table: NCNN fp16 runs, whatever auto picked.
    assert restarted.post("/api/settings", json={"engine": "ncnn", "precision": "fp16"}).status_code == 200
    forced = restarted.get("/api/status").get_json()["precision"]
    assert (forced["engine"], forced["active"]) == ("ncnn", "fp16")
    restarted.post("/stream/stop")
    deleted = restarted.post("/reset").get_json()["deleted"]
    # The verdict lives beside the ONNX the engines run: cache/<sha256>.onnx (server.models.acceptance).
    assert any(name.startswith("cache/") and name.endswith(".int8.json") for name in deleted), deleted


@pytest.mark.slow
def test_stop_cancels_the_timing_and_leaves_no_verdict_or_partial_files(tmp_path, make_video, demo_onnx):
    app = create_app(Config(uploads=tmp_path / "up", host="127.0.0.1", int8_recipes="u8s8-pc-rr"))
    client = app.test_client()
    start_streaming(client, make_video, demo_onnx)
    status_when(client, lambda s: s["job"] is not None and s["job"]["kind"] == "engine-timing", timeout=60)
    assert client.post("/stream/stop").status_code == 200
    service = app.extensions["detection"]
    assert service.timing.cancel()  # joined: nothing runs on
    status = client.get("/api/status").get_json()
    assert status["job"] is None and status["precision"]["timing"] is None
    assert (status["precision"]["engine"], status["precision"]["active"]) == ("onnxruntime", "fp32")
    left = sorted(p.name for p in (tmp_path / "up").rglob("*") if p.is_file())
    # (an NCNN int8 model finished before the stop is whole, and kept: only the int8 recipes' files count here)
    assert not [name for name in left if ("int8" in name and "ncnn-int8" not in name) or name.startswith(".")], left


def test_a_precision_chosen_while_on_auto_chooses_the_engine_that_offers_it():
    from server.models.policy import with_engine
    from server.vision.settings import Settings, SettingsError, apply_changes

    auto = Settings()
    assert auto.engine == "auto"

    def changed(changes, offered=OFFERED):
        return apply_changes(auto, with_engine(auto, changes, offered), offered)

    assert changed({"precision": "int8"}).engine == "onnxruntime"
    assert changed({"precision": "fp16"}).engine == "ncnn"
    assert changed({"engine": "auto", "precision": "fp16"}).engine == "auto"
    with pytest.raises(SettingsError, match="not offered"):
        changed({"precision": "fp16"}, offered={"onnxruntime": ["fp32", "int8"]})
