"""Identify uploaded YOLO weights (.pt or .onnx) without running them: family, task, classes and input size.

A .pt is read into inert stand-ins by server.models.checkpoint (tensor storages are not read); the stand-in tree is
enough to tell the model class, its yaml, class names and training size. An .onnx is told by its metadata and I/O
shapes (server.models.onnx_info).
"""

from __future__ import annotations

import logging
from pathlib import Path

from server.models.checkpoint import (
    FOREIGN_MODULE_ROOTS,
    StandIn,
    attrs,
    class_of,
    is_tensor,
    read_checkpoint,
    short,
)
from server.models.info import (
    DEFAULT_IMGSZ,
    HEAD_TASK,
    LAYER_FAMILY,
    MODEL_CLASS_FAMILY,
    MODEL_CLASS_TASK,
    SUPPORTED,
    YOLO_NAS_KEY,
    YOLOV7_MARKERS,
    YOLOV9_ORIGINAL_MARKERS,
    ModelInfo,
    ModelRejected,
    as_size,
    class_names,
    family_from_name,
    refusal,
)
from server.models.onnx_info import inspect_onnx
from server.models.trial_run import DEFAULT_BUDGET, TrialBudget

logger = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".pt", ".onnx")  # what inspect_model identifies


def inspect_model(path: str | Path, trial: TrialBudget | None = DEFAULT_BUDGET) -> ModelInfo:
    """Identify a .pt or .onnx file, raising ModelRejected unless it is a usable YOLOv8 detect model.

    An .onnx is also run once within the trial budget (trial=None: the file is only read).
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".pt":
        return inspect_checkpoint(path)
    if suffix == ".onnx":
        return inspect_onnx(path, trial)
    raise not_a_model(suffix)


def not_a_model(suffix: str) -> ModelRejected:
    """The refusal of a file whose extension is not a model's."""
    expected = " or ".join(MODEL_EXTENSIONS)
    return ModelRejected(f"Not a model file: expected a {expected} file, got {suffix or 'no extension'}")


def inspect_checkpoint(path: str | Path) -> ModelInfo:
    """Identify a .pt checkpoint without executing it; raise ModelRejected unless it is YOLOv8 detect."""
    return identify_checkpoint(*read_checkpoint(path))


def identify_checkpoint(top: object, seen: set[str]) -> ModelInfo:
    """Identify a checkpoint as the inert reader read it (top object, globals named); ModelRejected unless usable."""
    refuse_foreign(top, seen)
    model = model_object(top)
    model_attrs = attrs(model)
    model_class = short(class_of(model))
    yaml = model_attrs.get("yaml") if isinstance(model_attrs.get("yaml"), dict) else {}
    layers = layer_names(yaml, seen)
    family = checkpoint_family(model_class, yaml, layers)
    task = checkpoint_task(model_class, layers, model_attrs.get("task"))
    if family != "YOLOv8" or task != "detect":
        raise refusal(family or "unrecognised Ultralytics", task, "checkpoint")
    head = detect_head(model_attrs)
    head_nc = attrs(head).get("nc") if isinstance(attrs(head).get("nc"), int) else yaml.get("nc")
    classes = class_names(model_attrs.get("names"), head_nc if isinstance(head_nc, int) else None)
    if isinstance(head_nc, int) and head_nc != len(classes):
        raise ModelRejected(f"The model lists {len(classes)} class names but its detection head has {head_nc} classes")
    imgsz = training_imgsz(top, model_attrs)
    logger.info("checkpoint: %s %s (%s), %d classes, imgsz %d", family, task, model_class, len(classes), imgsz)
    return ModelInfo("yolov8", "detect", classes, imgsz, None)


def refuse_foreign(top: object, seen: set[str]) -> None:
    """Refuse checkpoints of other YOLO projects (ultralytics/yolov5 repo, YOLOv7/v9 repos, super-gradients)."""
    foreign = {g.split(".")[0] for g in seen} & FOREIGN_MODULE_ROOTS
    names = {short(g) for g in seen}
    if "super_gradients" in foreign or is_super_gradients(top):
        raise ModelRejected(f"This is a YOLO-NAS checkpoint (super-gradients); {SUPPORTED}")
    if not foreign:
        return
    if names & YOLOV7_MARKERS:
        raise ModelRejected(f"This is a YOLOv7 checkpoint (WongKinYiu/yolov7 repository); {SUPPORTED}")
    if names & YOLOV9_ORIGINAL_MARKERS:
        raise ModelRejected(f"This is a YOLOv9 checkpoint from the WongKinYiu/yolov9 repository; {SUPPORTED}")
    if "models" in foreign:
        raise ModelRejected(
            "This is a YOLOv5 checkpoint from the ultralytics/yolov5 repository, which the ultralytics package "
            f"cannot load; {SUPPORTED} (train one with the ultralytics package)"
        )
    raise ModelRejected(f"Not an Ultralytics checkpoint: it references {sorted(seen)[0]}")


def is_super_gradients(top: object) -> bool:
    """Return whether a checkpoint is a super-gradients (YOLO-NAS) state dict: 'net'/'ema_net' or NAS keys."""
    if not isinstance(top, dict):
        return False
    if any(isinstance(v, str) and "yolo_nas" in v.lower() for v in top.values()):  # e.g. an architecture name
        return True
    state = top.get("ema_net") or top.get("net") or top
    return isinstance(state, dict) and any(isinstance(k, str) and YOLO_NAS_KEY.search(k) for k in state)


def model_object(top: object) -> StandIn:
    """Return the model a checkpoint holds (its 'ema' or 'model'), refusing state dicts and unknown objects."""
    model = top.get("ema") or top.get("model") if isinstance(top, dict) else top
    if isinstance(top, dict) and model is None:
        if top and all(is_tensor(v) for v in top.values()):
            raise ModelRejected(
                "This .pt holds only a state dict (weights without the model architecture); upload the checkpoint "
                "ultralytics saved (e.g. runs/detect/train/weights/best.pt)"
            )
        raise ModelRejected("Not an Ultralytics checkpoint: it contains no 'model' or 'ema' entry")
    if not class_of(model).startswith("ultralytics."):
        found = class_of(model) or type(model).__name__
        raise ModelRejected(f"Not an Ultralytics checkpoint: its model is a {found}")
    return model


def layer_names(yaml: dict, seen: set[str]) -> set[str]:
    """Return the block names a model is built from: its yaml's layer list plus the layer classes pickled."""
    names = {short(g) for g in seen if g.startswith("ultralytics.nn.modules")}
    for part in ("backbone", "head"):
        for layer in yaml.get(part) or []:
            if isinstance(layer, (list, tuple)) and len(layer) >= 3 and isinstance(layer[2], str):
                names.add(short(layer[2]))
    return names


def checkpoint_family(model_class: str, yaml: dict, layers: set[str]) -> str | None:
    """Return the model family from its class, blocks and yaml (None when nothing identifies it)."""
    family = MODEL_CLASS_FAMILY.get(model_class)
    family = family or next((name for name, marks in LAYER_FAMILY if layers & marks), None)
    by_name = family_from_name(str(yaml.get("yaml_file") or ""))
    if family == "YOLO11" and (yaml.get("end2end") or yaml.get("reg_max") == 1 or by_name == "YOLO26"):
        return "YOLO26"  # YOLO26 is built from YOLO11's blocks with an end-to-end, DFL-free head
    return family or by_name


def checkpoint_task(model_class: str, layers: set[str], task_attr: object) -> str:
    """Return the task from the model class, else its head blocks, else its task attribute."""
    if model_class in MODEL_CLASS_TASK:
        return MODEL_CLASS_TASK[model_class]
    heads = [task for head, task in HEAD_TASK.items() if any(layer.startswith(head) for layer in layers)]
    if heads:
        return heads[0]
    return task_attr if isinstance(task_attr, str) else "detect"


def detect_head(model_attrs: dict) -> object:
    """Return the last layer of the model's Sequential (the Detect head), or None."""
    sequential = attrs(model_attrs.get("_modules")).get("model")
    layers = list(attrs(attrs(sequential).get("_modules")).values())
    return layers[-1] if layers else None


def training_imgsz(top: object, model_attrs: dict) -> int:
    """Return the training image size from train_args (or the model's args), else 640."""
    sources = (top.get("train_args") if isinstance(top, dict) else None, model_attrs.get("args"))
    for args in sources:
        size = as_size(attrs(args).get("imgsz"))
        if size:
            return size
    return DEFAULT_IMGSZ
