"""The ONNX graph the built-in converter writes, and the registry of what each layer class emits into it.

A Module wraps one stand-in nn.Module of the inert reader's tree (server.models.checkpoint); a Graph collects ONNX
nodes and initializers named as torch's exporter names them; @emits registers the function that writes a layer
class's forward pass (server.models.yolov8_onnx and server.models.yolov8_head). Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from server.models.checkpoint import attrs, class_of, short
from server.models.info import ModelRejected
from server.models.torch_zip import TensorReader

EXPORT_HINT = (
    "upload an ONNX export of it instead, made where ultralytics is installed: "
    "yolo export model=your.pt format=onnx dynamic=True"
)


class Module:
    """A stand-in nn.Module: its class name, attributes, submodules and tensors, at a dotted path."""

    def __init__(self, obj: object, path: str):
        self.obj, self.path = obj, path
        self.attrs = attrs(obj)
        self.kind = short(class_of(obj))

    def child(self, name: str) -> Module | None:
        value = attrs(self.attrs.get("_modules")).get(name)
        return Module(value, f"{self.path}.{name}") if value is not None else None

    def children(self) -> list[Module]:
        return [Module(v, f"{self.path}.{k}") for k, v in attrs(self.attrs.get("_modules")).items() if v is not None]

    def tensor(self, name: str) -> object | None:
        """Return the stand-in of a parameter or buffer, or None when the module has none of that name."""
        for holder in ("_parameters", "_buffers"):
            value = attrs(self.attrs.get(holder)).get(name)
            if value is not None:
                return value
        return None

    def need(self, name: str) -> Module:
        found = self.child(name)
        if found is None:
            raise ModelRejected(f"The checkpoint's {self.kind} layer {self.path} has no {name}; {EXPORT_HINT}")
        return found


class Graph:
    """ONNX nodes and initializers being built, named the way torch's exporter names them (/model.2/cv1/conv/Conv)."""

    def __init__(self, tensors: TensorReader):
        self.tensors = tensors
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.taken: set[str] = set()

    def unique(self, name: str) -> str:
        candidate, count = name, 0
        while candidate in self.taken:
            count += 1
            candidate = f"{name}_{count}"
        self.taken.add(candidate)
        return candidate

    def op(self, op_type: str, inputs: list[str], scope: str, outputs: int | list[str] = 1, **attributes):
        """Add a node; return its output name (or the list of them when it has several)."""
        name = self.unique(f"/{scope_name(scope)}/{op_type}")
        names = outputs if isinstance(outputs, list) else [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=name, **attributes))
        return names[0] if len(names) == 1 else names

    def constant(self, name: str, value: np.ndarray) -> str:
        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, scope: str, values: list[int]) -> str:
        return self.constant(f"/{scope}/Constant", np.array(values, np.int64))

    def array(self, tensor: object, dtype=np.float32) -> np.ndarray:
        return self.tensors.array(tensor).astype(dtype)


def scope_name(path: str) -> str:
    """Return torch's scope for a module path: model.2.m.0.cv1 -> model.2/m.0/cv1 (indexes stay with their list)."""
    scope = ""
    for part in path.split("."):
        scope += ("." if part.isdigit() else "/") + part if scope else part
    return scope


Emitter = Callable[[Graph, Module, object], object]
EMITTERS: dict[str, Emitter] = {}


def emits(*kinds: str):
    def register(function: Emitter) -> Emitter:
        for kind in kinds:
            EMITTERS[kind] = function
        return function

    return register


def emit(graph: Graph, module: Module, x):
    """Emit one module's forward pass on x (a name, or a list of names for Concat/Detect); return its output."""
    function = EMITTERS.get(module.kind)
    if function is None:
        raise ModelRejected(
            f"The built-in converter does not know the {module.kind or 'unnamed'} layer ({module.path}) "
            f"this checkpoint uses; {EXPORT_HINT}"
        )
    return function(graph, module, x)
