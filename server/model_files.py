"""Identify uploaded YOLO weights (.pt or .onnx) without running them: family, task, classes and input size.

A .pt is a torch zip archive whose data.pkl is a pickle, and unpickling can run arbitrary code. So the pickle is
read with an Unpickler whose find_class answers only names on an allow-list, and even those resolve to inert
stand-ins (never the real class or function): nothing the file names is ever imported or called. Tensor storages
are not read at all. The stand-in tree is then enough to tell the model class, its yaml, class names and
training size. This module must never import torch or ultralytics (the server process stays free of them).
"""

from __future__ import annotations

import ast
import hashlib
import io
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SUPPORTED = "only YOLOv8 detect models are supported"
DEFAULT_IMGSZ = 640
MAX_PICKLE_BYTES = 64 * 1024 * 1024  # data.pkl holds the object tree only; tensors live in other records
MAX_METADATA_CHARS = 1_000_000
LEGACY_TORCH_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")  # pickled magic number of pre-1.6 torch.save


class PickledDict(dict):
    """A pickled OrderedDict as a plain dict; attributes pickled with it (a state dict's _metadata) are set aside."""

    def __setstate__(self, state):
        self.pickled_state = state


# --- the allow-list ---------------------------------------------------------------------------------------------
# Exact globals an Ultralytics checkpoint may name besides layer classes (each was seen in real checkpoints or in
# ultralytics' own restricted loader). They all become inert stand-ins; only these plain containers are real:
REAL_CONTAINERS = {
    "collections.OrderedDict": PickledDict,  # module._modules/_parameters/_buffers and state dicts
    "builtins.set": set,  # module._non_persistent_buffers_set
    "builtins.frozenset": frozenset,
}
ALLOWED_GLOBALS = frozenset(
    {
        "builtins.slice",
        "builtins.getattr",  # older heads pickle `Detect.forward` as getattr(Detect, "forward")
        "collections.defaultdict",
        "copyreg._reconstructor",  # objects pickled with protocol 0/1
        "_codecs.encode",  # bytes inside numpy scalars under pickle protocol 2
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",  # every tensor
        "torch._utils._rebuild_parameter",  # every nn.Parameter
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch.Size",  # Detect.shape, kept from the last forward pass in trained checkpoints
        "torch.device",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "numpy.dtype",  # best_fitness / metrics saved as numpy scalars by older ultralytics
        "numpy.ndarray",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "ultralytics.utils.IterableSimpleNamespace",  # model.args of a checkpoint saved mid-training
        "ultralytics.yolo.utils.IterableSimpleNamespace",  # the same before ultralytics 8.0.44
        "types.SimpleNamespace",
        "argparse.Namespace",
        "datetime.datetime",
        "datetime.date",
        "datetime.timedelta",
        "datetime.timezone",
        "pathlib.Path",
        "pathlib.PosixPath",  # paths in train args, from either OS and from Python 3.13 (pathlib._local)
        "pathlib.WindowsPath",
        "pathlib._local.PosixPath",
        "pathlib._local.WindowsPath",
    }
)
ALLOWED_PATTERNS = (
    re.compile(r"torch\.[A-Za-z0-9]*Storage"),  # FloatStorage, HalfStorage, LongStorage ... in storage ids
    re.compile(r"torch\.(float|double|half|bfloat|int|uint|long|short|bool|complex)[0-9]*"),  # dtypes
)
# Modules whose classes (names with a capital letter, which their functions lack) may appear: the layers and models
# themselves, the loss a training model carries, classification transforms and YOLO-World's text encoder.
LAYER_MODULE_PREFIXES = (
    "torch.nn.",
    "ultralytics.nn.",
    "ultralytics.utils.loss",
    "ultralytics.utils.tal",
    "ultralytics.data.augment",
    "ultralytics.yolo.data.augment",
    "torchvision.transforms.",
    "clip.model",
)
CLASS_NAME = re.compile(r"(?=[a-z0-9]*[A-Z])[A-Za-z][A-Za-z0-9_]*")  # has a capital: v10Detect yes, autopad no
# Other projects' checkpoints: let them load as stand-ins so the refusal can say what they are.
FOREIGN_MODULE_ROOTS = {"models", "utils", "super_gradients"}

# --- what was found -----------------------------------------------------------------------------------------------
MODEL_CLASS_TASK = {
    "DetectionModel": "detect",
    "YOLOv10DetectionModel": "detect",
    "RTDETRDetectionModel": "detect",
    "WorldModel": "detect",
    "YOLOEModel": "detect",
    "SegmentationModel": "segment",
    "YOLOESegModel": "segment",
    "PoseModel": "pose",
    "ClassificationModel": "classify",
    "OBBModel": "obb",
    "DepthModel": "depth",
    "SemanticSegmentationModel": "semantic",
}
MODEL_CLASS_FAMILY = {
    "RTDETRDetectionModel": "RT-DETR",
    "WorldModel": "YOLO-World",
    "YOLOEModel": "YOLOE",
    "YOLOESegModel": "YOLOE",
    "YOLOv10DetectionModel": "YOLOv10",
}
HEAD_TASK = {"Segment": "segment", "Pose": "pose", "Classify": "classify", "OBB": "obb"}
# First match wins: later families reuse earlier blocks (YOLOv10 keeps C2f, YOLO12 keeps C3k2).
LAYER_FAMILY = (
    ("RT-DETR", {"RTDETRDecoder", "HGStem", "HGBlock", "AIFI"}),
    ("YOLOE", {"YOLOEDetect", "YOLOESegment", "YOLOESegment26", "LRPCHead"}),
    ("YOLO-World", {"WorldDetect", "C2fAttn", "ImagePoolingAttn"}),
    ("YOLOv10", {"v10Detect", "SCDown", "PSA", "C2fCIB"}),
    ("YOLOv9", {"RepNCSPELAN4", "ADown", "AConv", "SPPELAN", "ELAN1", "CBLinear", "CBFuse"}),
    ("YOLO12", {"A2C2f"}),
    ("YOLO26", {"Segment26", "Pose26", "OBB26"}),
    ("YOLO11", {"C3k2", "C2PSA"}),
    ("YOLOv5u", {"C3"}),
    ("YOLOv8", {"C2f"}),
)
# Family from a model name ("yolov8n-ghost.yaml", "YOLO11n", "rtdetr-l") when no block marks it.
NAME_FAMILY = (
    ("yoloe", "YOLOE"),
    ("world", "YOLO-World"),
    ("rtdetr", "RT-DETR"),
    ("rt-detr", "RT-DETR"),
    ("yolov10", "YOLOv10"),
    ("yolov9", "YOLOv9"),
    ("yolo12", "YOLO12"),
    ("yolo26", "YOLO26"),
    ("yolo11", "YOLO11"),
    ("yolov8", "YOLOv8"),
    ("yolov6", "YOLOv6"),
    ("yolov5", "YOLOv5u"),
    ("yolov3", "YOLOv3u"),
)
TASK_WORDS = {
    "segment": "segmentation",
    "pose": "pose",
    "classify": "classification",
    "obb": "oriented-box (OBB)",
    "depth": "depth",
    "semantic": "semantic segmentation",
}
YOLOV7_MARKERS = {"IDetect", "IAuxDetect", "IBin", "SPPCSPC", "RepConv", "ReOrg"}
YOLOV9_ORIGINAL_MARKERS = {"DualDDetect", "DDetect", "TripleDDetect", "RepNCSPELAN4", "ADown", "SPPELAN"}
YOLO_NAS_KEY = re.compile(r"(^|\.)heads\.head1\.|backbone\.stem\.conv\.rbr_")


class ModelRejected(ValueError):
    """Weights the server cannot use; the message says what they are, for the person who uploaded them."""


@dataclass(frozen=True)
class ModelInfo:
    """What an accepted model is: family, task, class names in id order and input size."""

    family: str
    task: str
    classes: list[str]
    imgsz: int
    input_hw: tuple[int, int] | None = None

    @property
    def dynamic(self) -> bool:
        return self.input_hw is None

    def as_dict(self) -> dict:
        """Return the JSON fields the API shows for a model."""
        return {
            "family": self.family,
            "task": self.task,
            "classes": list(self.classes),
            "imgsz": self.imgsz,
            "dynamic": self.dynamic,
        }


# --- shared helpers ---------------------------------------------------------------------------------------------
def sha256_of(path: str | Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_model(path: str | Path) -> ModelInfo:
    """Identify a .pt or .onnx file, raising ModelRejected unless it is a usable YOLOv8 detect model."""
    suffix = Path(path).suffix.lower()
    if suffix == ".pt":
        return inspect_checkpoint(path)
    if suffix == ".onnx":
        return inspect_onnx(path)
    raise ModelRejected(f"Not a model file: expected a .pt or .onnx file, got {suffix or 'no extension'}")


def family_from_name(name: str) -> str | None:
    """Return the family a model or yaml name belongs to ("yolov8n-ghost.yaml" -> "YOLOv8"), or None."""
    lowered = name.lower()
    return next((family for key, family in NAME_FAMILY if key in lowered), None)


def refusal(family: str, task: str, kind: str) -> ModelRejected:
    """Return the rejection for a model of another family or task, naming what it is."""
    article = "an" if family.startswith(("RT-", "unrecognised")) else "a"
    if task == "detect":
        return ModelRejected(f"This is {article} {family} detect {kind}; {SUPPORTED}")
    words = TASK_WORDS.get(task, task)
    return ModelRejected(f"This is {article} {family} {words} model (task '{task}'); {SUPPORTED}")


def class_names(names: object, count: int | None = None) -> list[str]:
    """Return class names in id order from a {id: name} dict or a list, or class0.. when only a count is known."""
    if isinstance(names, dict) and names:
        try:
            by_id = {int(key): str(value) for key, value in names.items()}
        except (TypeError, ValueError):
            raise ModelRejected("The model's class names are not keyed by class id") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise ModelRejected("The model's class ids are not numbered 0..n-1")
        return [by_id[i] for i in range(len(by_id))]
    if isinstance(names, (list, tuple)) and names:
        return [str(name) for name in names]
    if count:
        return [f"class{i}" for i in range(count)]
    raise ModelRejected("The model carries no class names")


def as_size(value: object) -> int | None:
    """Return an image size from an int or an [h, w] pair (the longer side), or None when it is not one."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
        value = max(value)
    if isinstance(value, int) and not isinstance(value, bool) and 32 <= value <= 8192:
        return value
    return None


# --- .pt checkpoints --------------------------------------------------------------------------------------------
class StandIn:
    """An inert placeholder for anything a checkpoint pickles; it only records what it was built from."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.state, self.items = args, None, []
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def append(self, item):
        self.items.append(item)

    def extend(self, items):
        self.items.extend(items)

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<stand-in {self.qualname}>"


class Storage(StandIn):
    """Stand-in for a tensor storage: the record it would be read from, which is never read."""

    qualname = "storage"


def is_allowed(module: str, name: str) -> bool:
    """Return whether a global a pickle names is on the allow-list."""
    full = f"{module}.{name}"
    if full in ALLOWED_GLOBALS or any(p.fullmatch(full) for p in ALLOWED_PATTERNS):
        return True
    return bool(CLASS_NAME.fullmatch(name)) and module.startswith(LAYER_MODULE_PREFIXES)


class InertUnpickler(pickle.Unpickler):
    """Unpickle a checkpoint into stand-ins, refusing any global outside the allow-list."""

    def __init__(self, data: bytes, prefix: str, records: set[str]):
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.prefix, self.records = prefix, records
        self.globals_seen: set[str] = set()
        self._stand_ins: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        full = f"{module}.{name}"
        if full in REAL_CONTAINERS:
            return REAL_CONTAINERS[full]
        if not (is_allowed(module, name) or module.split(".")[0] in FOREIGN_MODULE_ROOTS):
            raise ModelRejected(
                f"refusing to load: the checkpoint references {full}, which is not part of a YOLO checkpoint"
            )
        self.globals_seen.add(full)
        if full not in self._stand_ins:
            self._stand_ins[full] = type(name if name.isidentifier() else "StandIn", (StandIn,), {"qualname": full})
        return self._stand_ins[full]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise ModelRejected("Not a model file: the checkpoint refers to data in an unknown way")
        if f"{self.prefix}/data/{pid[2]}" not in self.records:
            raise ModelRejected("Not a model file: the checkpoint is missing tensor data (truncated or damaged)")
        return Storage(*pid)


def read_checkpoint(path: str | Path) -> tuple[object, set[str]]:
    """Unpickle a torch zip checkpoint into stand-ins; return the top object and the globals it named."""
    with open(path, "rb") as handle:
        head = handle.read(len(LEGACY_TORCH_MAGIC))
    if head.startswith(LEGACY_TORCH_MAGIC):
        raise ModelRejected(
            "This .pt uses PyTorch's legacy (pre-1.6) format, which cannot be checked safely; "
            "re-save it with a current ultralytics/PyTorch or upload an ONNX export"
        )
    if not head.startswith(b"PK"):
        raise ModelRejected("Not a model file: this is not a PyTorch checkpoint (.pt)")
    try:
        with zipfile.ZipFile(path) as archive:
            records = set(archive.namelist())
            pickle_name = pickle_record(records)
            if archive.getinfo(pickle_name).file_size > MAX_PICKLE_BYTES:
                raise ModelRejected("Not a model file: the checkpoint's object tree is implausibly large")
            data = archive.read(pickle_name)
    except ModelRejected:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, ValueError):
        raise ModelRejected("Not a model file: the checkpoint archive is damaged") from None
    unpickler = InertUnpickler(data, pickle_name.rsplit("/", 1)[0], records)
    try:
        top = unpickler.load()
    except ModelRejected:
        raise
    except Exception as exc:  # a damaged pickle fails in many ways; none of them may escape as a 500
        logger.info("checkpoint pickle unreadable: %r", exc)
        raise ModelRejected("Not a model file: the checkpoint's contents are damaged") from None
    return top, unpickler.globals_seen


def pickle_record(records: set[str]) -> str:
    """Return the name of the data.pkl record in a torch archive, refusing TorchScript and other zips."""
    if any(r.endswith("/constants.pkl") or "/code/" in r for r in records):
        raise ModelRejected(
            "This is a TorchScript export, not an Ultralytics checkpoint; upload the original .pt or an ONNX export"
        )
    found = [r for r in records if r.endswith("/data.pkl") and r.count("/") == 1]
    if len(found) != 1:
        raise ModelRejected("Not a model file: this zip is not a PyTorch checkpoint")
    return found[0]


def attrs(obj: object) -> dict:
    """Return the attribute dict an object was pickled with ({} when there is none)."""
    if isinstance(obj, dict):
        return obj
    if not isinstance(obj, StandIn):
        return {}
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
        state = {key: value for part in state if isinstance(part, dict) for key, value in part.items()}
    if state is None and obj.qualname == "copyreg._reconstructor" and len(obj.args) == 3:
        state = obj.args[2]
    return state if isinstance(state, dict) else {}


def class_of(obj: object) -> str:
    """Return the dotted class name a stand-in stands for ('' for plain data)."""
    if not isinstance(obj, StandIn):
        return ""
    if obj.qualname == "copyreg._reconstructor" and obj.args and isinstance(obj.args[0], type):
        return getattr(obj.args[0], "qualname", "")
    return obj.qualname


def short(qualname: str) -> str:
    return qualname.rsplit(".", 1)[-1]


def is_tensor(obj: object) -> bool:
    return class_of(obj).startswith(("torch._utils._rebuild", "torch._tensor._rebuild"))


def inspect_checkpoint(path: str | Path) -> ModelInfo:
    """Identify a .pt checkpoint without executing it; raise ModelRejected unless it is YOLOv8 detect."""
    top, seen = read_checkpoint(path)
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


# --- .onnx exports ----------------------------------------------------------------------------------------------
def inspect_onnx(path: str | Path) -> ModelInfo:
    """Identify an ONNX export by its Ultralytics metadata and I/O shapes; raise ModelRejected unless YOLOv8 detect."""
    model = load_onnx(path)
    meta = {prop.key: prop.value for prop in model.metadata_props}
    if "Ultralytics" not in meta.get("author", "") + meta.get("description", "") or "names" not in meta:
        raise ModelRejected(
            "Not an Ultralytics YOLO export: this ONNX model has no Ultralytics metadata (class names, task); "
            "export it with ultralytics (model.export(format='onnx'))"
        )
    family, task = onnx_family(meta), meta.get("task", "detect")
    if (family or "YOLOv8") != "YOLOv8" or task != "detect":
        raise refusal(family or "unrecognised Ultralytics", task, "ONNX model")
    refuse_baked_nms(model, meta)
    classes = class_names(literal(meta.get("names")))
    input_hw = onnx_input_hw(model)
    check_onnx_output(model, len(classes))
    imgsz = max(input_hw) if input_hw else as_size(literal(meta.get("imgsz"))) or DEFAULT_IMGSZ
    if family is None:
        logger.warning("ONNX model of unnamed family %r accepted by its Detect output", meta.get("description"))
    logger.info("onnx: %d classes, imgsz %d, input %s", len(classes), imgsz, input_hw or "dynamic")
    return ModelInfo("yolov8", "detect", classes, imgsz, input_hw)


def load_onnx(path: str | Path):
    """Parse an ONNX file (without external data) or raise ModelRejected."""
    import onnx  # imported here so importing this module stays cheap

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning-as-error, ValueError ...
        logger.info("onnx parse failed: %r", exc)
        raise ModelRejected("Not an ONNX model: the file could not be parsed") from None
    if not (model.graph.node and model.graph.input and model.graph.output):
        raise ModelRejected("Not an ONNX model: the file holds no graph")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ModelRejected("This ONNX model keeps its weights in separate files; export it as a single .onnx file")
    return model


def literal(text: str | None) -> object:
    """Parse a Python-literal metadata value (names, imgsz) with ast.literal_eval, or return None."""
    if not text or len(text) > MAX_METADATA_CHARS:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def onnx_family(meta: dict) -> str | None:
    """Return the family from the export's head and description ("Ultralytics YOLOv8n model ..."), or None."""
    head_family = {"RTDETRDecoder": "RT-DETR", "v10Detect": "YOLOv10", "WorldDetect": "YOLO-World"}
    if meta.get("head") in head_family:
        return head_family[meta["head"]]
    if str(meta.get("head", "")).startswith("YOLOE"):
        return "YOLOE"
    match = re.search(r"Ultralytics\s+(\S+)\s+model", meta.get("description", ""))
    return family_from_name(match.group(1)) if match else None


def refuse_baked_nms(model, meta: dict) -> None:
    """Refuse exports with NMS or an end-to-end head inside (a 1 x 300 x 6 output instead of raw predictions)."""
    args = literal(meta.get("args"))
    dims = tensor_dims(model.graph.output[0])
    if isinstance(args, dict) and args.get("nms"):
        raise ModelRejected(
            f"This YOLOv8 ONNX model was exported with nms=True; re-export with nms=False ({SUPPORTED})"
        )
    if meta.get("end2end") == "True" or (len(dims) == 3 and dims[2] == 6):
        raise ModelRejected(
            f"This ONNX model has end-to-end post-processing built in (output {shape_text(dims)}); "
            f"re-export without it ({SUPPORTED})"
        )


def tensor_dims(value_info) -> list[int | str | None]:
    """Return a graph input/output's dims: ints when fixed, names when symbolic, None when unknown."""
    dims = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or None)
    return dims


def shape_text(dims: list) -> str:
    return " x ".join(str(d) if d is not None else "?" for d in dims)


def onnx_input_hw(model) -> tuple[int, int] | None:
    """Return the fixed (h, w) of the single 1x3xHxW float input, or None when H and W are dynamic."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelRejected(f"A YOLOv8 ONNX model has one image input; this one has {len(inputs)}")
    dims = tensor_dims(inputs[0])
    if inputs[0].type.tensor_type.elem_type != 1:  # TensorProto.FLOAT
        raise ModelRejected("This ONNX model does not take float32 input (half precision?); export with half=False")
    if len(dims) != 4 or dims[1] != 3 or isinstance(dims[0], int) and dims[0] != 1:
        raise ModelRejected(f"This ONNX model's input is {shape_text(dims)}, not 1 x 3 x height x width")
    height, width = dims[2], dims[3]
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def check_onnx_output(model, class_count: int) -> None:
    """Require a single 1 x (4 + classes) x anchors output, as a YOLOv8 Detect head produces."""
    outputs = model.graph.output
    dims = tensor_dims(outputs[0])
    expected = 4 + class_count
    if len(outputs) != 1 or len(dims) != 3 or dims[1] != expected or isinstance(dims[0], int) and dims[0] != 1:
        shapes = ", ".join(shape_text(tensor_dims(o)) for o in outputs)
        raise ModelRejected(
            f"This ONNX model's output is {shapes}; a YOLOv8 detect model with {class_count} classes "
            f"outputs 1 x {expected} x anchors"
        )
