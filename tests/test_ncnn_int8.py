"""NCNN int8 written by the project's own code (server.models.ncnn.int8): ncnn loads it, it agrees with ONNX Runtime
fp32, its weights are ncnn's int8 format and round-trip, and its files are offered, replaced and deleted as they
should be. Real ncnn, the demo model and demo-video frames; no mocks.
"""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import onnx
import pytest

from harness.client import upload
from server.demo.video import render_frames
from server.models.ncnn import ncnn_model_for
from server.models.ncnn.int8 import (
    KEEP_HEAD,
    KEEP_WINOGRAD,
    Int8Cancelled,
    build_ncnn_int8,
    int8_ready,
    kl_threshold_bin,
    remove_int8,
    to_int8,
)
from server.models.ncnn.translate import Translation
from server.models.ncnn.weights import INT8_FLAG
from server.models.runtime import ModelRuntime
from server.models.tuning import judging
from server.models.tuning.calibration import split_frames
from server.vision import processing
from server.vision.detector import Detector
from server.vision.engines import EngineKey
from server.vision.engines.ncnn_engine import NcnnEngine
from server.vision.settings import Settings
from tests.support.converter_models import real_checkpoints  # noqa: F401 (a fixture)

# Measured on the demo video (48 held-back frames, 272 fp32 boxes at conf 0.25): max-abs 0.943 at 640; the bar
# leaves room for the smaller frame sample here.
AGREEMENT_BAR = 0.90
CALIBRATION_FRAMES = 24


@pytest.fixture(scope="module")
def demo_split():
    """The demo video's frames, 48 spread over its 20 s, split as the int8 tuning splits them."""
    frames = list(render_frames(seconds=20, fps=2.4))
    return split_frames(frames)


@pytest.fixture
def demo_build(demo_onnx, tmp_path):
    copy = tmp_path / demo_onnx.name
    shutil.copyfile(demo_onnx, copy)
    build = ncnn_model_for(copy)
    assert build.files is not None, build.reason
    return copy, build


def tensors_of(frames, onnx_path, imgsz):
    input_hw = Detector(onnx_path, 1).input_hw(frames[0].shape[:2], imgsz)
    return [processing.preprocess(frame, input_hw)[0] for frame in frames]


def read_bin(layers, data: bytes):
    """Read an int8 .bin back layer by layer as ncnn's loader does: {layer: (weights, bias, scales, bottom)}."""
    found, at = {}, 0

    def take(count, dtype):
        nonlocal at
        size = count * np.dtype(dtype).itemsize
        values = np.frombuffer(data, dtype, count, at)
        at += size + (-size % 4)
        return values

    for layer in layers:
        if not layer.weights:
            continue
        size, outputs = layer.params[6], layer.params[0]
        flag = int(np.frombuffer(data, "<u4", 1, at)[0])
        at += 4
        weights = take(size, np.int8) if flag == INT8_FLAG else take(size, "<f4")
        bias = take(outputs, "<f4") if layer.params.get(5) else None
        scales = bottom = None
        if flag == INT8_FLAG:
            scales, bottom = take(layer.params.get(7, outputs) if layer.kind == "ConvolutionDepthWise" else outputs,
                                  "<f4"), take(1, "<f4")
        found[layer.name] = (flag, weights, bias, scales, bottom)
    assert at == len(data), "the .bin holds exactly what the layers read"
    return found


HEAD_ONLY, HYBRID = frozenset({KEEP_HEAD}), frozenset({KEEP_HEAD, KEEP_WINOGRAD})


@pytest.mark.parametrize("imgsz, keep", [(640, HEAD_ONLY), (320, HEAD_ONLY), (640, HYBRID)],
                         ids=["640", "320", "640-3x3s1-float"])
def test_the_int8_model_loads_in_ncnn_and_agrees_with_onnx_runtime_fp32(demo_build, demo_split, imgsz, keep):
    onnx_path, build = demo_build
    calibration, held_frames = demo_split
    report = build_ncnn_int8(build, tensors_of(calibration[:CALIBRATION_FRAMES], onnx_path, imgsz), keep=keep)
    assert report.files.param.name == f"{onnx_path.stem}.ncnn-int8.param" and report.files.head.is_file()
    # float: each level's box and class map conv; the hybrid also every 3x3 stride-1 conv (fp16 Winograd on ARM)
    assert (len(report.quantized), len(report.kept_float)) == ((57, 6) if keep == HEAD_ONLY else (25, 38))
    text = report.files.param.read_text()
    assert text.count(" 8=2") == len(report.quantized)
    if keep == HYBRID:
        assert not [line for line in text.splitlines() if " 8=2" in line and " 1=3 " in line and " 3=1 " in line]
    reference = Detector(onnx_path, 1)
    held = judging.collect_held_back(reference, held_frames, imgsz)
    int8 = Detector(NcnnEngine(report.files, 1, "int8"))
    score = judging.agreement([int8.infer(t) for t in held.tensors], held)
    print(f"\nncnn int8 at {imgsz}: agreement {score:.3f} ({held.method}, {held.reference_boxes()} fp32 boxes, "
          f"{len(held.tensors)} frames)")
    assert score >= AGREEMENT_BAR
    # int8 is really int8: its outputs differ from NCNN fp32's, which match ONNX Runtime's within 1e-3
    fp32 = NcnnEngine(build.files, 1, "fp32").infer(held.tensors[0])
    assert np.abs(int8.infer(held.tensors[0]) - fp32).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("keep", [HEAD_ONLY, HYBRID], ids=["head-float", "3x3s1-float"])
def test_a_real_checkpoint_converted_agrees_in_int8(real_checkpoints, demo_split, tmp_path, keep):
    """railway-obstacles (trained by others) through the converter: on the demo video fp32 finds a few boxes, so
    agreement is the score-map measure (measured 0.944 / 0.958 at 640)."""
    from server.models.convert import convert_to_onnx

    onnx_path = tmp_path / "railway.onnx"
    convert_to_onnx(real_checkpoints["railway-obstacles-yolov8.pt"], onnx_path)
    build = ncnn_model_for(onnx_path)
    assert build.files is not None, build.reason
    calibration, held_frames = demo_split
    report = build_ncnn_int8(build, tensors_of(calibration, onnx_path, 640), keep=keep)
    held = judging.collect_held_back(Detector(onnx_path, 1), held_frames, 640)
    int8 = NcnnEngine(report.files, 1, "int8")
    score = judging.agreement([int8.infer(t) for t in held.tensors], held)
    print(f"\nrailway-obstacles ncnn int8 ({sorted(keep)} float): agreement {score:.3f} ({held.method})")
    assert score >= AGREEMENT_BAR


def test_weights_are_ncnn_int8_and_dequantize_within_half_a_step(demo_build, demo_split):
    onnx_path, build = demo_build
    report = build_ncnn_int8(build, tensors_of(demo_split[0][:4], onnx_path, 320), method="minmax", keep=HEAD_ONLY)
    layers, _, _ = Translation(onnx.load(str(onnx_path))).translate()
    stored = read_bin(layers, report.files.bin.read_bytes())
    assert {name for name, entry in stored.items() if entry[0] == INT8_FLAG} == set(report.quantized)
    assert {name for name, entry in stored.items() if entry[0] == 0} == set(report.kept_float)
    for layer in layers:
        if layer.name not in report.quantized:
            continue
        flag, weights, bias, scales, bottom = stored[layer.name]
        fp32 = layer.weights[0][0].reshape(len(scales), -1)
        restored = weights.reshape(len(scales), -1).astype(np.float64) / scales[:, None]
        assert np.all(np.abs(restored - fp32) <= 0.5 / scales[:, None] + 1e-7), layer.name
        assert np.abs(weights).max() <= 127 and bottom[0] > 0
        assert np.array_equal(bias, layer.weights[1][0])
        levels = 31 if (layer.params[1], layer.params[11], layer.params[3]) == (3, 3, 1) else 127
        assert np.isclose(np.abs(weights.reshape(len(scales), -1)).max(axis=1), levels).all(), layer.name
    # the first convolution reads the image, whose values are 0..1: max-abs calibration gives 127 / 1
    first = next(layer for layer in layers if layer.name in report.quantized)
    assert stored[first.name][4][0] == pytest.approx(127 / float(np.max(demo_split[0][:4]) / 255), rel=0.02)


def test_rounding_and_the_kl_threshold():
    assert to_int8(np.array([[0.5, -0.5, 1.49, 300.0, -300.0]]), np.array([1.0])).tolist() == [[1, -1, 1, 127, -127]]
    rng = np.random.default_rng(0)
    values = np.concatenate([np.abs(rng.normal(size=100_000)), [40.0]])  # one outlier far out
    histogram = np.bincount(np.minimum((values / 40 * 2048).astype(int), 2047), minlength=2048)
    threshold = (kl_threshold_bin(histogram) + 0.5) * 40 / 2048
    assert 2.5 < threshold < 6  # clips the outlier, keeps the bulk of a unit normal
    assert kl_threshold_bin(np.zeros(2048, np.int64)) == 2048


def test_offered_only_when_made_then_runs_made_again_is_a_new_run_and_goes_with_a_new_onnx(demo_build, demo_split):
    onnx_path, build = demo_build
    runtime = ModelRuntime(onnx_path, lambda: None, ncnn=build)
    settings = Settings(engine="ncnn", precision="int8", threads=1)
    assert runtime.backends.offered()[0]["ncnn"] == ["fp32", "fp16"]
    assert runtime.policy.key_for(settings) == EngineKey("ncnn", "fp32", 1)  # not made yet: NCNN fp32 meanwhile
    tensors = tensors_of(demo_split[0][:2], onnx_path, 320)
    build_ncnn_int8(build, tensors, method="minmax")
    assert runtime.backends.offered()[0]["ncnn"] == ["fp32", "fp16", "int8"]
    run = runtime.policy.run_for(settings)
    assert run.key == EngineKey("ncnn", "int8", 1) and run.model.name.endswith(".ncnn-int8.param")
    detector = runtime.detector_for(settings)
    assert detector.precision == "int8" and detector.path == run.model
    assert runtime.detector_for(settings) is detector
    time.sleep(0.01)  # a coarse clock must still see the second write as newer
    build_ncnn_int8(build, tensors, method="kl")  # made again (new frames): the same names, a new model
    again = runtime.policy.run_for(settings)
    assert again.key == run.key and again != run and runtime.detector_for(settings) is not detector
    onnx_path.touch()  # another ONNX under the same name: the int8 set is stale, as the fp32 one is
    assert int8_ready(build) is None
    assert "int8" not in ModelRuntime(onnx_path, lambda: None).backends.offered()[0]["ncnn"]
    remove_int8(build)
    assert not list(onnx_path.parent.glob("*.ncnn-int8.*"))


def test_cancel_stops_before_anything_is_written(demo_build, demo_split):
    onnx_path, build = demo_build
    cancel, seen = threading.Event(), []

    def progress(stage, fraction, message):
        seen.append(fraction)
        if fraction > 0.1:
            cancel.set()

    with pytest.raises(Int8Cancelled):
        build_ncnn_int8(build, tensors_of(demo_split[0][:6], onnx_path, 320), on_progress=progress, cancel=cancel)
    assert seen and not list(onnx_path.parent.glob("*.ncnn-int8.*"))


def test_reset_deletes_the_int8_files_and_start_up_cleans_a_half_written_one(client, app, demo_onnx, demo_split):
    from server.files import temporary_name_for
    from server.web.recovery import clean_leftovers

    assert upload(client, "/upload/model", demo_onnx).status_code == 201
    runtime = app.extensions["detection"].model.runtime
    build_ncnn_int8(runtime.backends.ncnn.build(), tensors_of(demo_split[0][:2], runtime.fp32_path, 320), method="minmax")
    model = client.get("/api/status").get_json()["model"]
    assert model["engines"]["ncnn"] == ["fp32", "fp16", "int8"]
    assert client.post("/api/settings", json={"engine": "ncnn", "precision": "int8"}).status_code == 200
    uploads = app.extensions["uploads"].root
    written = sorted(p.relative_to(uploads).as_posix() for p in uploads.rglob("*.ncnn-int8.*"))
    assert [name.rsplit(".", 1)[1] for name in written] == ["bin", "json", "param"]
    partial = temporary_name_for(runtime.backends.ncnn.build().files.int8().bin)  # what a crash mid-write leaves
    partial.write_bytes(b"half")
    assert partial.name in clean_leftovers([partial.parent]) and not partial.exists()
    deleted = client.post("/reset").get_json()["deleted"]
    assert set(written) <= set(deleted)
    assert not list(uploads.rglob("*.ncnn-int8.*"))
