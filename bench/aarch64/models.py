"""The meter's model files, made on the x86 host (ONNX, int8 QDQ and NCNN files are platform-independent).

The model is a YOLOv8n with ultralytics' 80 classes (yolov8n.yaml, nothing downloaded) carrying the demo
model's trained weights: backbone, neck and box branch are the demo's as they are; the class branch is widened
from the demo's 64 channels to yolov8n's 80 with zero weights in the new channels, its first 5 class outputs
are the demo's and the other 75 have a bias of -20 (score 2e-9: never a candidate). So the network is YOLOv8n's
exact compute (the 80-class head the published Pi 5 timings are for) and finds on the demo video what the demo
model finds, so that decoding, NMS, tracking and drawing do real work. Torch and ultralytics are needed here
only (dev tools), never in the emulated runtime venv.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_PT = REPO_ROOT / "server" / "demo" / "model" / "shapes-yolov8n.pt"
UNUSED_CLASS_BIAS = -20.0
INT8_RECIPE = "s8s8-pc"  # signed activations: ONNX Runtime's int8 path on ARM with dot product
ULTRALYTICS_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}


@dataclass(frozen=True)
class ModelFiles:
    """Every file the meter's variants run, all on the host."""

    pt: Path
    fp32: Path  # this project's conversion of the .pt (what the server streams with)
    int8: Path  # the server's int8 tuning of fp32 (QDQ)
    ultralytics_onnx: Path  # `yolo export format=onnx` (static 640x640)
    ultralytics_ncnn: Path | None  # `yolo export format=ncnn` folder (needs pnnx)
    slim: tuple[Path, Path] | None = None  # fp32 and int8 of the model slimmed by tools/slim.py (prepare --slim)


def transplant_state(source: dict, target: dict, class_bias_keys: set[str]) -> dict:
    """Copy source tensors into target's shapes: the overlap at the leading indices, zeros elsewhere.

    A class-output bias (class_bias_keys) gets UNUSED_CLASS_BIAS beyond the source's classes.
    """
    merged = {}
    for key, tensor in target.items():
        value = source[key]
        if value.shape == tensor.shape:
            merged[key] = value.clone()
            continue
        widened = tensor.new_full(tensor.shape, UNUSED_CLASS_BIAS if key in class_bias_keys else 0.0)
        overlap = tuple(slice(0, min(a, b)) for a, b in zip(value.shape, tensor.shape))
        widened[overlap] = value[overlap]
        merged[key] = widened
    return merged


def build_yolov8n80(out: Path) -> Path:
    """Write the 80-class YOLOv8n with the demo's weights (module docstring) to out."""
    os.environ.update(ULTRALYTICS_ENV)
    from ultralytics import YOLO  # noqa: PLC0415

    demo = YOLO(str(DEMO_PT))
    full = YOLO("yolov8n.yaml")
    source = {k: v.float() for k, v in demo.model.state_dict().items()}
    target = full.model.state_dict()
    head = len(full.model.model) - 1
    bias_keys = {k for k in target if k.startswith(f"model.{head}.cv3.") and k.endswith(".2.bias")}
    full.model.load_state_dict(transplant_state(source, target, bias_keys))
    names = dict(demo.model.names)
    full.model.names = {i: names.get(i, f"class{i}") for i in range(full.model.model[-1].nc)}
    full.model.args = {**getattr(demo.model, "args", {}), "imgsz": 640}
    out.parent.mkdir(parents=True, exist_ok=True)
    full.save(str(out))
    return out


def ultralytics_export(pt: Path, folder: Path, fmt: str) -> Path:
    """Export with Ultralytics' defaults at 640 (static), as its users do; from a neutrally named copy."""
    os.environ.update(ULTRALYTICS_ENV)
    from ultralytics import YOLO  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (f"{pt.stem}.onnx" if fmt == "onnx" else f"{pt.stem}_ncnn_model")
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=folder) as work:
        local = Path(work) / pt.name
        shutil.copyfile(pt, local)
        exported = Path(YOLO(str(local)).export(format=fmt, imgsz=640, device="cpu", verbose=False))
        shutil.move(str(exported), target)
    return target


def ours(pt: Path, folder: Path, video: Path) -> tuple[Path, Path]:
    """This project's fp32 conversion of pt and the server's int8 tuning of it (both cached in folder)."""
    from server.models import convert  # noqa: PLC0415
    from server.models.tuning import tune as tuning  # noqa: PLC0415
    from server.vision.sources.base import CALIBRATION_FRAMES  # noqa: PLC0415
    from server.vision.sources.file import sample_frames  # noqa: PLC0415

    fp32 = convert.convert_cached(pt, folder, timeout=900).onnx_path
    int8 = tuning.int8_path_for(fp32)
    report = tuning.cached_tuning(fp32, int8)
    if report is None:
        frames = sample_frames(video, CALIBRATION_FRAMES)
        report = tuning.time_engines(fp32, frames, tuning.TimingRequest(640, threads=2, recipes=[INT8_RECIPE]))
    logger.info("int8 of %s: %s", pt.name, report.chosen)
    return fp32, Path(report.path)


def check_slim(slim: Path, base: Path) -> None:
    """Refuse a slimmed model that is not the meter's own model slimmed (its rows would compare other networks)."""
    from server.models.identify import inspect_checkpoint  # noqa: PLC0415

    classes = inspect_checkpoint(slim).classes
    if classes != inspect_checkpoint(base).classes:
        raise SystemExit(f"{slim} has {len(classes)} classes, not the meter's model's: slim that model "
                         f"(python -m tools.slim {base} FOOTAGE --out DIR) and pass DIR's .pt to --slim")


def prepare(folder: Path, video: Path, with_ncnn: bool = True, slim: Path | None = None) -> ModelFiles:
    """Make (or reuse) every model file in folder: the .pt, our fp32 and int8 ONNX, Ultralytics' exports, and the
    slimmed model's fp32 and int8 when slim (a .pt of tools/slim.py made from folder's .pt) is given."""
    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / "yolov8n-shapes80.pt"
    if not pt.exists():
        build_yolov8n80(pt)
    fp32, int8 = ours(pt, folder / "ours", video)
    slimmed = None
    if slim is not None:
        check_slim(slim, pt)
        slimmed = ours(slim, folder / "slim", video)
    onnx_export = ultralytics_export(pt, folder / "ultralytics", "onnx")
    ncnn_export = None
    if with_ncnn:
        try:
            ncnn_export = ultralytics_export(pt, folder / "ultralytics", "ncnn")
        except Exception as error:  # pnnx missing: the NCNN peer's rows say so
            logger.warning("no NCNN export: %s", error)
    return ModelFiles(pt, fp32, int8, onnx_export, ncnn_export, slimmed)
