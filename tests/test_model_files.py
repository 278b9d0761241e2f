"""Weights inspection: .pt without unpickling for real, .onnx by metadata and shapes (conversion: test_converter.py)."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest

from server.files import sha256_of
from server.models.identify import inspect_checkpoint, inspect_model
from server.models.info import ModelInfo, ModelRejected
from server.models.onnx_info import inspect_onnx

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED = "only YOLOv8 detect models are supported"


@pytest.mark.parametrize(
    "name, imgsz, input_hw, classes",
    [
        ("yolov8n.pt", 640, None, [str(i) for i in range(80)]),
        ("yolov8n.onnx", 640, None, [str(i) for i in range(80)]),
        ("yolov8n-320.onnx", 320, (320, 320), [str(i) for i in range(80)]),
        ("yolov8n-trained.pt", 64, None, ["square", "circle"]),  # mid-training: ema, optimizer, train_args
        ("yolov8n-trained-best.pt", 64, None, ["square", "circle"]),  # final, optimizer stripped
        ("yolov8n-ghost.pt", 640, None, [str(i) for i in range(80)]),
    ],
)
def test_yolov8_detect_files_are_accepted(model_zoo, name, imgsz, input_hw, classes):
    info = inspect_model(model_zoo / name)
    assert info == ModelInfo("yolov8", "detect", classes, imgsz, input_hw)
    assert info.as_dict() == {
        "family": "yolov8",
        "task": "detect",
        "classes": classes,
        "imgsz": imgsz,
        "dynamic": input_hw is None,
    }


@pytest.mark.parametrize(
    "name, found",
    [
        ("yolov5nu.pt", "This is a YOLOv5u detect checkpoint"),
        ("yolo11n.pt", "This is a YOLO11 detect checkpoint"),
        ("yolov10n.pt", "This is a YOLOv10 detect checkpoint"),
        ("rtdetr-l.pt", "This is an RT-DETR detect checkpoint"),
        ("yolov9t.pt", "This is a YOLOv9 detect checkpoint"),
        ("yolo12n.pt", "This is a YOLO12 detect checkpoint"),
        ("yolo26n.pt", "This is a YOLO26 detect checkpoint"),
        ("yolov8n-world.pt", "This is a YOLO-World detect checkpoint"),
        ("yolov8n-seg.pt", "This is a YOLOv8 segmentation model (task 'segment')"),
        ("yolov8n-pose.pt", "This is a YOLOv8 pose model (task 'pose')"),
        ("yolov8n-cls.pt", "This is a YOLOv8 classification model (task 'classify')"),
        ("yolov8n-obb.pt", "This is a YOLOv8 oriented-box (OBB) model (task 'obb')"),
        ("yolov5-repo.pt", "This is a YOLOv5 checkpoint from the ultralytics/yolov5 repository"),
        ("yolo-nas.pt", "This is a YOLO-NAS checkpoint (super-gradients)"),
        ("yolov5nu.onnx", "This is a YOLOv5u detect ONNX model"),
        ("yolo11n.onnx", "This is a YOLO11 detect ONNX model"),
        ("yolov10n.onnx", "This is a YOLOv10 detect ONNX model"),
        ("yolov8n-seg.onnx", "This is a YOLOv8 segmentation model (task 'segment')"),
        ("yolov8n-nms.onnx", "exported with nms=True"),
    ],
)
def test_other_families_and_tasks_are_refused_by_name(model_zoo, name, found):
    with pytest.raises(ModelRejected) as refused:
        inspect_model(model_zoo / name)
    assert found in str(refused.value)
    assert SUPPORTED in str(refused.value)


@pytest.mark.parametrize(
    "name, found",
    [
        ("random.pt", "Not a model file"),
        ("random.onnx", "Not an ONNX model"),
        ("truncated.onnx", "Not an ONNX model"),
        ("plain.onnx", "no Ultralytics metadata"),
        ("legacy.pt", "legacy (pre-1.6) format"),
        ("torchscript.pt", "TorchScript"),
        ("state-dict.pt", "only a state dict"),
    ],
)
def test_files_that_are_not_ultralytics_models_are_refused(model_zoo, name, found):
    with pytest.raises(ModelRejected, match=found.replace("(", r"\(").replace(")", r"\)")):
        inspect_model(model_zoo / name)


def test_unknown_extension_is_refused(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(ModelRejected, match=r"expected a \.pt or \.onnx file, got \.pth"):
        inspect_model(weights)


@pytest.mark.parametrize(
    "name, forbidden", [("malicious-system.pt", "posix.system"), ("malicious-exec.pt", "builtins.exec")]
)
def test_malicious_zoo_pickles_are_refused_without_running(model_zoo, name, forbidden):
    marker = Path(json.loads((model_zoo / "manifest.json").read_text())["markers"][name])
    assert not marker.exists()
    with pytest.raises(ModelRejected, match=f"refusing to load: the checkpoint references {forbidden}"):
        inspect_checkpoint(model_zoo / name)
    assert not marker.exists()


class WritesMarker:
    """Unpickles as exec(code that writes a marker file)."""

    def __init__(self, marker: Path):
        self.code = f"open({str(marker)!r}, 'w').write('ran')"

    def __reduce__(self):
        return exec, (self.code,)


def torch_archive(path: Path, pickled: bytes) -> Path:
    """Write pickled bytes as the data.pkl of a torch-style zip archive."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/version", "3\n")
    return path


def test_live_payload_runs_under_plain_pickle_but_not_under_inspection(tmp_path):
    marker = tmp_path / "marker"
    pickled = pickle.dumps({"model": WritesMarker(marker), "train_args": {"imgsz": 640}}, protocol=2)
    pickle.loads(pickled)  # proves the payload is live
    assert marker.read_text() == "ran"
    marker.unlink()
    with pytest.raises(ModelRejected, match="references builtins.exec"):
        inspect_checkpoint(torch_archive(tmp_path / "evil.pt", pickled))
    assert not marker.exists()


def test_ultralytics_functions_are_not_on_the_allow_list(tmp_path):
    pickled = b"\x80\x02cultralytics.nn.tasks\ntorch_safe_load\n)R."  # torch_safe_load() via GLOBAL + REDUCE
    with pytest.raises(ModelRejected, match="references ultralytics.nn.tasks.torch_safe_load"):
        inspect_checkpoint(torch_archive(tmp_path / "function.pt", pickled))


def with_metadata(source: Path, target: Path, **changes: str) -> Path:
    model = onnx.load(str(source))
    for prop in model.metadata_props:
        if prop.key in changes:
            prop.value = changes[prop.key]
    onnx.save(model, str(target))
    return target


def test_onnx_names_are_parsed_as_literals_only(model_zoo, tmp_path):
    marker = tmp_path / "marker"
    names = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"
    tampered = with_metadata(model_zoo / "yolov8n-320.onnx", tmp_path / "tampered.onnx", names=names)
    with pytest.raises(ModelRejected, match="no class names"):
        inspect_onnx(tampered)
    assert not marker.exists()


def test_onnx_output_must_match_the_class_names(model_zoo, tmp_path):
    three = with_metadata(model_zoo / "yolov8n-320.onnx", tmp_path / "three.onnx", names="{0: 'a', 1: 'b', 2: 'c'}")
    with pytest.raises(ModelRejected, match="1 x 84 x 2100; a YOLOv8 detect model with 3 classes outputs 1 x 7"):
        inspect_onnx(three)


def test_sha256_of_matches_hashlib(model_zoo):
    path = model_zoo / "yolov8n.pt"
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_server_modules_never_import_torch_or_ultralytics(model_zoo, tmp_path):
    code = (
        "import sys, json\n"
        "import server.models.identify as m, server.models.convert as c\n"
        f"m.inspect_model({str(model_zoo / 'yolov8n.pt')!r}); m.inspect_model({str(model_zoo / 'yolov8n.onnx')!r})\n"
        f"c.convert_to_onnx({str(model_zoo / 'yolov8n.pt')!r}, {str(tmp_path / 'n.onnx')!r})\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'ultralytics'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout) == []
