"""Build the test model zoo into OUTDIR: python tests/support/build_models.py OUTDIR.

Every model comes from ultralytics' own yaml files with random weights (nothing is downloaded), plus hand-made
files the server must refuse: an ultralytics/yolov5-repo checkpoint, a YOLO-NAS state dict, malicious pickles,
legacy/TorchScript/state-dict .pt files, random bytes and a plain ONNX graph. OUTDIR/manifest.json is written last;
when it names the same ultralytics version and builder, nothing is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.model_zoo import builder_id, zoo_is_current  # noqa: E402
from bench.ultralytics_reference import ULTRALYTICS_ENVIRONMENT, block_network  # noqa: E402

os.environ.update(ULTRALYTICS_ENVIRONMENT)
block_network()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ultralytics import RTDETR, YOLO  # noqa: E402

log = logging.getLogger("build_models")

# name -> yaml it is built from; names are what the tests look files up by.
YAML_MODELS = {
    "yolov8n.pt": "yolov8n.yaml",
    "yolov5nu.pt": "yolov5n.yaml",
    "yolo11n.pt": "yolo11n.yaml",
    "yolov10n.pt": "yolov10n.yaml",
    "yolov8n-seg.pt": "yolov8n-seg.yaml",
    "yolov8n-pose.pt": "yolov8n-pose.yaml",
    "yolov8n-cls.pt": "yolov8n-cls.yaml",
    "yolov8n-obb.pt": "yolov8n-obb.yaml",
    "yolov8n-ghost.pt": "yolov8n-ghost.yaml",  # a YOLOv8 variant without C2f blocks
    "yolov8n-world.pt": "yolov8n-world.yaml",
    "yolov9t.pt": "yolov9t.yaml",
    "yolo12n.pt": "yolo12n.yaml",
    "yolo26n.pt": "yolo26n.yaml",
}
# onnx name -> (source .pt, export options)
EXPORTS = {
    "yolov8n.onnx": ("yolov8n.pt", {"dynamic": True}),
    "yolov8n-320.onnx": ("yolov8n.pt", {"dynamic": False, "imgsz": 320}),
    "yolov8n-nms.onnx": ("yolov8n.pt", {"dynamic": False, "imgsz": 320, "nms": True}),
    "yolov5nu.onnx": ("yolov5nu.pt", {"dynamic": True}),
    "yolo11n.onnx": ("yolo11n.pt", {"dynamic": True}),
    "yolov10n.onnx": ("yolov10n.pt", {"dynamic": True}),
    "yolov8n-seg.onnx": ("yolov8n-seg.pt", {"dynamic": True}),
}
TRAINED_NAMES = {0: "square", 1: "circle"}


def build_yaml_models(out: Path) -> None:
    for name, yaml in YAML_MODELS.items():
        YOLO(yaml).save(out / name)
    RTDETR("rtdetr-l.yaml").save(out / "rtdetr-l.pt")


def export(out: Path, work: Path, source: str, target: str, options: dict) -> None:
    """Export out/source to out/target from a neutrally named copy (ultralytics renames 'yolov5n' weights)."""
    with tempfile.TemporaryDirectory(dir=work) as folder:
        local = Path(folder) / "model.pt"
        shutil.copyfile(out / source, local)
        exported = YOLO(str(local)).export(format="onnx", simplify=True, device="cpu", **options)
        shutil.move(exported, out / target)


def write_dataset(root: Path) -> Path:
    """Write a four-image, two-class dataset of squares and return its data.yaml."""
    import cv2

    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            image = np.full((64, 64, 3), 200, np.uint8)
            cv2.rectangle(image, (10, 10), (40, 40), (0, 0, 255), -1)
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), image)
            (root / "labels" / split / f"{i}.txt").write_text("0 0.39 0.39 0.47 0.47\n")
    names = "".join(f"  {i}: {n}\n" for i, n in TRAINED_NAMES.items())
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return data


def build_trained(out: Path, work: Path) -> None:
    """Train yolov8n for one epoch at imgsz 64; keep the mid-training checkpoint (ema, optimizer) and best.pt."""
    data = write_dataset(work / "dataset")
    model = YOLO("yolov8n.yaml")
    unstripped = out / "yolov8n-trained.pt"
    model.add_callback("on_model_save", lambda trainer: shutil.copyfile(trainer.last, unstripped))
    model.train(
        data=str(data), epochs=1, imgsz=64, batch=2, workers=0, device="cpu", plots=False, amp=False,
        project=str(work / "runs"), name="train", exist_ok=True, verbose=False,
    )  # fmt: skip
    shutil.copyfile(work / "runs" / "train" / "weights" / "best.pt", out / "yolov8n-trained-best.pt")


def fake_module(name: str, **classes) -> types.ModuleType:
    module = types.ModuleType(name)
    for class_name, cls in classes.items():
        cls.__module__, cls.__qualname__, cls.__name__ = name, class_name, class_name
        setattr(module, class_name, cls)
    return module


def build_yolov5_repo(out: Path) -> None:
    """Save a checkpoint shaped like ultralytics/yolov5's: a models.yolo.DetectionModel with models.common layers."""
    nn = torch.nn

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU()

    class C3(nn.Module):
        def __init__(self):
            super().__init__()
            self.cv1 = nn.Conv2d(16, 16, 1)

    class Detect(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = nn.ModuleList([nn.Conv2d(16, 255, 1)])
            self.nc, self.no, self.nl, self.na = 80, 85, 1, 3

    class DetectionModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(Conv(), C3(), Detect())
            self.yaml = {"nc": 80, "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "C3", [16]]], "head": []}
            self.names = [str(i) for i in range(80)]
            self.stride = torch.tensor([8.0, 16.0, 32.0])

    modules = {
        "models": types.ModuleType("models"),
        "models.common": fake_module("models.common", Conv=Conv, C3=C3),
        "models.yolo": fake_module("models.yolo", Detect=Detect, DetectionModel=DetectionModel),
    }
    sys.modules.update(modules)
    try:
        checkpoint = {
            "epoch": -1, "best_fitness": np.float64(0.5), "model": DetectionModel().half(), "ema": None,
            "updates": None, "optimizer": None, "opt": {"imgsz": 640, "epochs": 300}, "date": "2023-01-01",
        }  # fmt: skip
        torch.save(checkpoint, out / "yolov5-repo.pt")
    finally:
        for name in modules:
            sys.modules.pop(name, None)


def build_yolo_nas(out: Path) -> None:
    """Save a super-gradients style checkpoint: {'net': state dict with YOLO-NAS keys, 'acc', 'epoch'}."""
    net = OrderedDict(
        [
            ("backbone.stem.conv.rbr_dense.conv.weight", torch.zeros(48, 3, 3, 3)),
            ("heads.head1.cls_pred.weight", torch.zeros(80, 64, 1, 1)),
            ("heads.head1.reg_pred.weight", torch.zeros(68, 64, 1, 1)),
        ]
    )
    torch.save({"net": net, "acc": 0.5, "epoch": 3, "optimizer_state_dict": {"state": {}}}, out / "yolo-nas.pt")


class SystemCall:
    """Unpickles as os.system(command)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class ExecCall:
    """Unpickles as exec(code)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def build_malicious(out: Path) -> dict[str, str]:
    """Save pickles that would create marker files when loaded unsafely; return file -> marker path."""
    markers = {"malicious-system.pt": out / "PWNED-system", "malicious-exec.pt": out / "PWNED-exec"}
    model = YOLO("yolov8n.yaml").model
    model.model[-1].payload = SystemCall(f"touch {markers['malicious-system.pt']}")  # deep inside a real model
    torch.save({"model": model, "train_args": {"imgsz": 640}}, out / "malicious-system.pt")
    code = f"open({str(markers['malicious-exec.pt'])!r}, 'w').write('pwned')"
    torch.save({"model": ExecCall(code), "date": "2024-01-01"}, out / "malicious-exec.pt")
    return {name: str(marker) for name, marker in markers.items()}


def build_odd_files(out: Path) -> None:
    """Save .pt files that are not Ultralytics checkpoints, and bytes that are not models at all."""
    rng = np.random.default_rng(0)
    (out / "random.pt").write_bytes(rng.bytes(4096))
    (out / "random.onnx").write_bytes(rng.bytes(4096))
    onnx_bytes = (out / "yolov8n.onnx").read_bytes()
    (out / "truncated.onnx").write_bytes(onnx_bytes[: len(onnx_bytes) // 3])
    torch.save({"weights": torch.zeros(3)}, out / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(YOLO("yolov8n.yaml").model.state_dict(), out / "state-dict.pt")
    torch.jit.trace(torch.nn.Conv2d(3, 4, 1), torch.zeros(1, 3, 8, 8)).save(str(out / "torchscript.pt"))
    build_plain_onnx(out / "plain.onnx")
    truncate_a_tensor(out / "yolov8n.pt", out / "corrupt-tensors.pt")


def build_plain_onnx(path: Path) -> None:
    """Save a valid ONNX graph without Ultralytics metadata (1x3x640x640 in, same out)."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 640, 640])
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["output0"])], "plain", [image], [output])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def truncate_a_tensor(source: Path, target: Path) -> None:
    """Copy a torch archive with one tensor record cut short: the pickle is intact, the tensor data is not."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as damaged:
        records = original.infolist()
        victim = max((r for r in records if "/data/" in r.filename), key=lambda r: r.file_size).filename
        for record in records:
            data = original.read(record.filename)
            damaged.writestr(record.filename, data[: len(data) // 2] if record.filename == victim else data)


def build(out: Path) -> dict:
    """Build every file into out and return the manifest."""
    work = out / "_work"
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def step(name, function, *args):
        started = time.perf_counter()
        result = function(*args)
        timings[name] = round(time.perf_counter() - started, 2)
        log.info("%-20s %.1f s", name, timings[name])
        return result

    step("yaml models", build_yaml_models, out)
    for target, (source, options) in EXPORTS.items():
        step(target, export, out, work, source, target, options)
    step("trained", build_trained, out, work)
    step("yolov5 repo", build_yolov5_repo, out)
    step("yolo-nas", build_yolo_nas, out)
    markers = step("malicious", build_malicious, out)
    step("odd files", build_odd_files, out)
    shutil.rmtree(work, ignore_errors=True)
    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "manifest.json")
    return {"builder": builder_id(), "files": files, "markers": markers, "seconds": timings}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    out = Path(sys.argv[1]).resolve()
    manifest_path = out / "manifest.json"
    if zoo_is_current(out):
        log.info("model zoo in %s is up to date", out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    manifest = build(out)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    log.info("built %d files in %s", len(manifest["files"]), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
