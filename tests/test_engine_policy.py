"""What runs (server.models.policy) for given settings, on the demo model's real files: one EngineRun per answer.

The policy keeps no state about a stream, so the same object answers for any settings handed to it; a file made
again in place is another run, so the detector cache (ModelRuntime) loads it afresh.
"""

from __future__ import annotations

import os
import shutil

from server.models.ncnn import NcnnBuild
from server.models.policy import wants_timing
from server.models.runtime import ModelRuntime
from server.vision.engines import EngineKey
from server.vision.settings import Settings


def model_copy(demo_onnx, folder):
    fp32 = folder / "model.onnx"
    shutil.copyfile(demo_onnx, fp32)
    return fp32


def test_int8_runs_fp32_until_made_and_a_re_tuned_file_is_a_new_run(demo_onnx, tmp_path):
    fp32 = model_copy(demo_onnx, tmp_path)
    int8 = fp32.with_name("model.int8.u8s8-pc.onnx")
    kept: list = [None]
    runtime = ModelRuntime(fp32, lambda: kept[0], ncnn=NcnnBuild(None, "not wanted here"))
    settings = Settings(engine="onnxruntime", precision="int8", threads=1, imgsz=320)
    assert runtime.policy.run_for(settings).key == EngineKey("onnxruntime", "fp32", 1)  # not tuned yet
    shutil.copyfile(fp32, int8)  # an ONNX Runtime-loadable stand-in for the kept recipe's model
    kept[0] = int8
    run = runtime.policy.run_for(settings)
    assert run.key == EngineKey("onnxruntime", "int8", 1) and run.model == int8
    detector = runtime.detector_for(settings)
    assert detector.path == int8 and runtime.detector_for(settings) is detector
    stat = int8.stat()
    os.utime(int8, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # re-tuned: the same name, a new file
    assert runtime.policy.run_for(settings) != run and runtime.detector_for(settings) is not detector


def test_an_engine_the_model_cannot_run_runs_onnx_runtime_and_auto_runs_its_verdict_only_while_runnable(
        demo_onnx, tmp_path):
    fp32 = model_copy(demo_onnx, tmp_path)
    verdict: list = [None]
    runtime = ModelRuntime(fp32, lambda: None, ncnn=NcnnBuild(None, "an op does not translate"),
                           verdict=lambda: verdict[0])
    policy = runtime.policy
    assert runtime.backends.offered() == ({"onnxruntime": ["fp32", "int8"]}, {"ncnn": "an op does not translate"})
    assert policy.key_for(Settings(engine="ncnn", precision="fp16", threads=2)) == EngineKey("onnxruntime", "fp32", 2)
    auto = Settings(engine="auto", threads=2)
    assert policy.key_for(auto) == EngineKey("onnxruntime", "fp32", 2)  # not timed yet
    verdict[0] = {"engine": "onnxruntime", "precision": "fp32", "threads": 1, "row": "onnxruntime-fp32-t1"}
    assert policy.key_for(auto) == EngineKey("onnxruntime", "fp32", 1)
    verdict[0] = {"engine": "ncnn", "precision": "fp16", "threads": 1, "row": "ncnn-fp16-t1"}
    assert policy.key_for(auto) == EngineKey("onnxruntime", "fp32", 2)  # its files are gone: fp32 meanwhile
    assert wants_timing(auto) and wants_timing(Settings(engine="onnxruntime", precision="int8"))
    assert not wants_timing(Settings(engine="ncnn", precision="int8"))
