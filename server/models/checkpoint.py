"""Read a torch .pt checkpoint without running it: an Unpickler whose globals resolve only to inert stand-ins.

A .pt is a torch zip archive whose data.pkl is a pickle, and unpickling can run arbitrary code. So the pickle is
read with an Unpickler whose find_class answers only names on an allow-list, and even those resolve to inert
stand-ins (never the real class or function): nothing the file names is ever imported or called. The archive is
held to what torch itself writes (one member per name, sizes checked while reading, a bounded pickle), and the few
allow-listed callables that could chain into real code (getattr, _rebuild_from_type_v2) are held to the arguments real
checkpoints give them. One class of a user's own script is admitted by name, Torch-Pruning's __main__.C2f_v2, and only
as a bare stand-in whose every object must hold that class's known submodules (SCRIPT_LAYERS). Tensor storages are
read by server.models.torch_zip. This module must never import torch or ultralytics (the server process stays free
of them).
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import pickletools
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from server.models.info import ModelRejected

logger = logging.getLogger(__name__)

MAX_PICKLE_BYTES = 64 * 1024 * 1024  # data.pkl holds the object tree only; tensors live in other records
MAX_PICKLE_OPS = 2_000_000  # yolov8n's data.pkl has 38k opcodes; a mid-training yolov8x a few hundred thousand
MAX_MEMO_INDEX = 1_000_000  # the unpickler sizes its memo table by the largest index it is given
MEMO_WRITES = ("PUT", "BINPUT", "LONG_BINPUT")
MAX_MEMBERS = 100_000  # yolov8x has under 1,000 records
READ_CHUNK = 1 << 20
DAMAGED_ARCHIVE = "Not a model file: the checkpoint archive is damaged"
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
# Torch-Pruning's YOLOv8 example replaces every C2f with C2f_v2, a class of the user's own script (so its checkpoints
# name __main__.C2f_v2): two 1x1 convs cv0/cv1 where C2f has one cv1 it splits. A name proves nothing (any script can
# call a class that), so it becomes one more inert stand-in and every object of it must then have exactly this
# layout, Ultralytics blocks inside, or the checkpoint is refused (check_script_layers).
SCRIPT_LAYERS = {
    "__main__.C2f_v2": {
        "cv0": "ultralytics.nn.modules.conv.Conv",
        "cv1": "ultralytics.nn.modules.conv.Conv",
        "cv2": "ultralytics.nn.modules.conv.Conv",
        "m": "torch.nn.modules.container.ModuleList",
    }
}
SCRIPT_LAYER_BLOCKS = "ultralytics.nn.modules.block.Bottleneck"  # what C2f_v2.m holds
SCRIPT_HINT = (
    "a model saved from your own script cannot be read safely; upload its ONNX export instead "
    "(model.export(format='onnx', dynamic=True) in that script)"
)


class StandIn:
    """An inert placeholder for anything a checkpoint pickles; it only records what it was built from."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        cls.check_call(args)
        self = object.__new__(cls)
        self.args, self.state, self.items = args, None, []
        return self

    def __init__(self, *args, **kwargs):
        pass

    @classmethod
    def check_call(cls, args: tuple) -> None:
        """Refuse arguments a real checkpoint never passes (only the stand-ins below check anything)."""

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
    """Stand-in for a tensor storage: the record it would be read from (server.models.torch_zip reads it)."""

    qualname = "storage"


SUSPICIOUS = "refusing to load: the checkpoint calls {} in a way no YOLO checkpoint does"


class GetattrStandIn(StandIn):
    """getattr(...) as a stand-in: only getattr(<a layer or its class>, "<public name>").

    Old heads pickle Detect.forward as getattr(Detect, "forward"), fused models Conv.forward as
    getattr(<that Conv>, "forward_fuse"). A chain like getattr(Module, "__init__") -> __globals__ is refused.
    """

    @classmethod
    def check_call(cls, args: tuple) -> None:
        target, name = args if len(args) == 2 else (None, None)
        target_class = target if isinstance(target, type) else type(target)
        layer = issubclass(target_class, StandIn) and is_layer_class(target_class.qualname)
        if not (layer and isinstance(name, str) and name.isidentifier() and not name.startswith("_")):
            raise ModelRejected(SUSPICIOUS.format("builtins.getattr"))


class RebuildFromTypeStandIn(StandIn):
    """torch._tensor._rebuild_from_type_v2(func, type, args, state): func must rebuild a tensor, type be torch's."""

    @classmethod
    def check_call(cls, args: tuple) -> None:
        func, new_type = (args[0], args[1]) if len(args) == 4 else (None, None)
        rebuilds = getattr(func, "qualname", "").startswith("torch._utils._rebuild_")
        torch_type = getattr(new_type, "qualname", "").startswith("torch.")
        if not (rebuilds and torch_type and isinstance(args[2], tuple) and isinstance(args[3], (dict, type(None)))):
            raise ModelRejected(SUSPICIOUS.format("torch._tensor._rebuild_from_type_v2"))


class ScriptLayerStandIn(StandIn):
    """A layer class of the user's own script (SCRIPT_LAYERS): built bare as torch pickles modules, then checked.

    Each object is kept so its layout can be checked once its state is set (check_script_layers).
    """

    built: list

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls, *args, **kwargs)
        cls.built.append(self)
        return self

    @classmethod
    def check_call(cls, args: tuple) -> None:
        if args:  # torch pickles a module as cls.__new__(cls) plus its state: a call with arguments is something else
            raise ModelRejected(SUSPICIOUS.format(cls.qualname))


class ReconstructorStandIn(StandIn):
    """copyreg._reconstructor(cls, base, state) (protocol 0/1 objects): never for a script layer, which is then
    built without being counted among the objects whose layout is checked."""

    @classmethod
    def check_call(cls, args: tuple) -> None:
        if args and isinstance(args[0], type) and issubclass(args[0], ScriptLayerStandIn):
            raise ModelRejected(SUSPICIOUS.format("copyreg._reconstructor"))


CHECKED_CALLS = {
    "builtins.getattr": GetattrStandIn,
    "torch._tensor._rebuild_from_type_v2": RebuildFromTypeStandIn,
    "copyreg._reconstructor": ReconstructorStandIn,
}


def is_layer_class(full: str) -> bool:
    """Return whether a dotted name is a class of the layer modules (torch.nn, ultralytics.nn ...)."""
    module, _, name = full.rpartition(".")
    return bool(CLASS_NAME.fullmatch(name)) and module.startswith(LAYER_MODULE_PREFIXES)


def is_allowed(module: str, name: str) -> bool:
    """Return whether a global a pickle names is on the allow-list."""
    full = f"{module}.{name}"
    if full in ALLOWED_GLOBALS or any(p.fullmatch(full) for p in ALLOWED_PATTERNS):
        return True
    return bool(CLASS_NAME.fullmatch(name)) and module.startswith(LAYER_MODULE_PREFIXES)


def stand_in_class(name: str, full: str) -> type:
    """Return a fresh stand-in class for the global `full` (per unpickler, so nothing is shared between reads)."""
    base = ScriptLayerStandIn if full in SCRIPT_LAYERS else CHECKED_CALLS.get(full, StandIn)
    namespace = {"qualname": full, "built": []} if full in SCRIPT_LAYERS else {"qualname": full}
    return type(name if name.isidentifier() else "StandIn", (base,), namespace)


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
        if not (is_allowed(module, name) or full in SCRIPT_LAYERS or module.split(".")[0] in FOREIGN_MODULE_ROOTS):
            hint = f"; {SCRIPT_HINT}" if module == "__main__" else ""
            raise ModelRejected(
                f"refusing to load: the checkpoint references {full}, which is not part of a YOLO checkpoint{hint}"
            )
        self.globals_seen.add(full)
        if full not in self._stand_ins:
            self._stand_ins[full] = stand_in_class(name, full)
        return self._stand_ins[full]

    def script_layers(self) -> list[StandIn]:
        """Return every object built from a SCRIPT_LAYERS class."""
        return [obj for full in SCRIPT_LAYERS if full in self._stand_ins for obj in self._stand_ins[full].built]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise ModelRejected("Not a model file: the checkpoint refers to data in an unknown way")
        if f"{self.prefix}/data/{pid[2]}" not in self.records:
            raise ModelRejected("Not a model file: the checkpoint is missing tensor data (truncated or damaged)")
        return Storage(*pid)


@dataclass
class Checkpoint:
    """An opened checkpoint: its object tree as stand-ins, the globals it named, and its archive for tensor reads."""

    top: object
    globals_seen: set[str]
    archive: zipfile.ZipFile
    prefix: str


@contextlib.contextmanager
def open_checkpoint(path: str | Path) -> Iterator[Checkpoint]:
    """Unpickle a torch zip checkpoint into stand-ins and keep its archive open while the caller reads tensors."""
    check_zip_magic(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        raise ModelRejected(DAMAGED_ARCHIVE) from None
    with archive:
        records = member_names(archive)
        pickle_name = pickle_record(records)
        try:
            data = read_member(archive, pickle_name, MAX_PICKLE_BYTES)
        except ModelRejected:  # a ValueError too: keep its message
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
            raise ModelRejected(DAMAGED_ARCHIVE) from None
        prefix = pickle_name.rsplit("/", 1)[0]
        top, seen = unpickle(data, prefix, records)
        yield Checkpoint(top, seen, archive, prefix)


def read_checkpoint(path: str | Path) -> tuple[object, set[str]]:
    """Unpickle a torch zip checkpoint into stand-ins; return the top object and the globals it named."""
    with open_checkpoint(path) as checkpoint:
        return checkpoint.top, checkpoint.globals_seen


def check_zip_magic(path: str | Path) -> None:
    """Refuse legacy torch pickles and anything that is not a zip before opening it."""
    with open(path, "rb") as handle:
        head = handle.read(len(LEGACY_TORCH_MAGIC))
    if head.startswith(LEGACY_TORCH_MAGIC):
        raise ModelRejected(
            "This .pt uses PyTorch's legacy (pre-1.6) format, which cannot be checked safely; "
            "re-save it with a current ultralytics/PyTorch or upload an ONNX export"
        )
    if not head.startswith(b"PK"):
        raise ModelRejected("Not a model file: this is not a PyTorch checkpoint (.pt)")


def member_names(archive: zipfile.ZipFile) -> set[str]:
    """Return the archive's member names, refusing an archive where two members could be taken for one.

    Readers disagree on which of two same-named members they return (Python's zipfile takes the last, torch's the
    first), so a zip with duplicates can show this check one data.pkl and another reader the other one.
    """
    names = [info.filename for info in archive.infolist()]
    if len(names) > MAX_MEMBERS:
        raise ModelRejected("Not a model file: the checkpoint archive holds implausibly many records")
    seen: set[str] = set()
    for name in names:
        canonical = name.replace("\\", "/").lstrip("/").lower()
        if canonical in seen:
            raise ModelRejected(f"Not a model file: the checkpoint archive holds {name[:100]!r} more than once")
        seen.add(canonical)
    return set(names)


def read_member(archive: zipfile.ZipFile, name: str, limit: int, exact: bool = False) -> bytes:
    """Read one zip member, stopping as soon as it grows past limit (the size in its header is not trusted).

    Reading to the end lets zipfile check the member's CRC. With exact=True the member must be limit bytes long.
    """
    parts, total = [], 0
    with archive.open(name) as stream:
        while True:
            chunk = stream.read(min(READ_CHUNK, limit + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ModelRejected(f"Not a model file: the checkpoint record {name} is larger than it can be")
    if exact and total != limit:
        raise ModelRejected(f"Not a model file: the checkpoint record {name} holds {total} bytes, not {limit}")
    return b"".join(parts)


def check_pickle_budget(data: bytes) -> None:
    """Refuse a pickle whose opcodes would build more than a checkpoint ever needs, before unpickling it.

    A few bytes of pickle can ask for a lot of memory: one LONG_BINPUT with a large index makes the unpickler
    allocate a memo table of that size, and every opcode can push another object. Real YOLOv8 checkpoints use
    under 100k opcodes and memo indexes below 50k.
    """
    count = 0
    try:
        for opcode, argument, _ in pickletools.genops(data):
            count += 1
            if count > MAX_PICKLE_OPS:
                raise ModelRejected("Not a model file: the checkpoint's object tree is implausibly large")
            if opcode.name in MEMO_WRITES and isinstance(argument, int) and argument > MAX_MEMO_INDEX:
                raise ModelRejected("Not a model file: the checkpoint's object tree is implausibly large")
    except ModelRejected:
        raise
    except Exception as exc:  # genops raises ValueError on a bad opcode, others on truncated data
        logger.info("checkpoint pickle unreadable: %r", exc)
        raise ModelRejected("Not a model file: the checkpoint's contents are damaged") from None


def unpickle(data: bytes, prefix: str, records: set[str]) -> tuple[object, set[str]]:
    """Unpickle data.pkl into stand-ins within the opcode and memo budget; return the top object and globals."""
    check_pickle_budget(data)
    unpickler = InertUnpickler(data, prefix, records)
    try:
        top = unpickler.load()
    except ModelRejected:
        raise
    except Exception as exc:  # a damaged pickle fails in many ways; none of them may escape as a 500
        logger.info("checkpoint pickle unreadable: %r", exc)
        raise ModelRejected("Not a model file: the checkpoint's contents are damaged") from None
    check_script_layers(unpickler.script_layers())
    return top, unpickler.globals_seen


def check_script_layers(layers: list[StandIn]) -> None:
    """Refuse a script layer (SCRIPT_LAYERS) whose submodules are not exactly its known layout."""
    for layer in layers:
        expected = SCRIPT_LAYERS[layer.qualname]
        modules = attrs(attrs(layer).get("_modules"))
        found = {name: class_of(module) for name, module in modules.items()}
        blocks = {class_of(block) for block in attrs(attrs(modules.get("m")).get("_modules")).values()}
        if found != expected or not blocks <= {SCRIPT_LAYER_BLOCKS}:
            raise ModelRejected(
                f"refusing to load: the checkpoint's {layer.qualname} is not Torch-Pruning's layout "
                f"({', '.join(expected)}); {SCRIPT_HINT}"
            )


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


