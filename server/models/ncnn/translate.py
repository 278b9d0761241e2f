"""Translate the part of a YOLOv8 detect ONNX graph before the head's raw maps into ncnn layers.

Ops that translate: Conv (with a BatchNormalization after it folded in; groups become ConvolutionDepthWise),
Sigmoid and Mul(x, Sigmoid(x)) = Swish (SiLU), Relu, LeakyRelu, HardSwish, Tanh, Add/Sub/Mul/Div of two tensors
or of a tensor and a scalar, Concat and Split over channels, MaxPool/AveragePool, Resize/Upsample by fixed scales
(nearest or bilinear), Identity. A graph needing any other op before the cut raises Untranslatable, naming it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from server.models.ncnn.cut import GraphIndex, HeadCut, Untranslatable, find_head, level_strides, scales_of
from server.models.ncnn.param import Layer, with_splits

INPUT_BLOB = "in0"
BINARY_OPS = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3}
REVERSED_SCALAR_OPS = {"Add": 0, "Sub": 7, "Mul": 2, "Div": 8}  # scalar - x is rsub, scalar / x is rdiv
ACTIVATIONS = {"Sigmoid": "Sigmoid", "Relu": "ReLU", "Tanh": "TanH"}


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class Translation:
    """The ncnn layers of one graph, built node by node; ONNX tensors are renamed to short blob names."""

    def __init__(self, model: onnx.ModelProto):
        self.index = GraphIndex(model)
        inputs = [i for i in model.graph.input if i.name not in self.index.constants]
        if len(inputs) != 1:
            raise Untranslatable(f"it has {len(inputs)} inputs, not one image")
        self.input_name = inputs[0].name
        self.blobs: dict[str, str] = {self.input_name: INPUT_BLOB}
        self.layers: list[Layer] = [Layer("Input", "input", [], [INPUT_BLOB], input_params(inputs[0]))]
        self.done: set[int] = set()  # ids of nodes fused into another layer
        self.swish: dict[int, str] = {}  # id of a Mul(x, Sigmoid(x)) -> x

    def blob(self, tensor: str) -> str:
        if tensor not in self.blobs:
            self.blobs[tensor] = f"b{len(self.blobs)}"
        return self.blobs[tensor]

    def add(self, kind: str, node: onnx.NodeProto, inputs: list[str], outputs: list[str] | None = None,
            params: dict | None = None, weights: list | None = None) -> None:
        outputs = list(node.output) if outputs is None else outputs
        self.layers.append(Layer(kind, f"l{len(self.layers)}_{kind.lower()}", [self.blob(t) for t in inputs],
                                 [self.blob(t) for t in outputs], params or {}, weights or []))

    def alias(self, tensor: str, same_as: str) -> None:
        self.blobs[tensor] = self.blob(same_as)

    def translate(self) -> tuple[list[Layer], HeadCut, list[float]]:
        """Return the layers up to the head's maps (Split layers in place), the cut, and each level's stride."""
        cut = find_head(self.index)
        outputs = [tensor for level in cut.levels for tensor in level]
        needed = self.needed_nodes(outputs)
        self.fuse_swish(needed)
        for node in self.index.graph.node:
            if id(node) in needed and id(node) not in self.done:
                translator = TRANSLATORS.get(node.op_type)
                if translator is None:
                    raise Untranslatable(f"its {node.op_type} node ({node.name or node.output[0]}) has no NCNN "
                                         "translation")
                translator(self, node)
        strides = level_strides(self.index, [box for box, _ in cut.levels], self.input_name)
        levels = [(self.blobs[box], self.blobs[score]) for box, score in cut.levels]
        head = HeadCut(levels, cut.reg_max, cut.classes, cut.bins)
        return with_splits(self.layers, {blob for level in levels for blob in level}), head, strides

    def needed_nodes(self, outputs: list[str]) -> set[int]:
        """Ids of the nodes the outputs depend on (constants aside)."""
        needed, pending = set(), list(outputs)
        while pending:
            node = self.index.producer.get(pending.pop())
            if node is None or id(node) in needed or node.op_type == "Constant":
                continue
            needed.add(id(node))
            pending.extend(name for name in node.input if name and name not in self.index.constants)
        return needed

    def fuse_swish(self, needed: set[int]) -> None:
        """Mark each Mul(x, Sigmoid(x)) to become one Swish layer; its Sigmoid, listed before it, is skipped."""
        for node in self.index.graph.node:
            if node.op_type == "Mul" and id(node) in needed:
                for x, gate in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
                    sigmoid = self.index.made_by(gate, "Sigmoid")
                    if sigmoid is not None and sigmoid.input[0] == x and len(self.index.readers[gate]) == 1:
                        self.swish[id(node)] = x
                        self.done.add(id(sigmoid))
                        break

    def constant(self, tensor: str, what: str) -> np.ndarray:
        if tensor not in self.index.constants:
            raise Untranslatable(f"its {what} is computed, not a constant")
        return self.index.constants[tensor]


Translator = Callable[[Translation, onnx.NodeProto], None]
TRANSLATORS: dict[str, Translator] = {}


def translates(*op_types: str):
    def register(function: Translator) -> Translator:
        TRANSLATORS.update(dict.fromkeys(op_types, function))
        return function

    return register


def input_params(value_info: onnx.ValueInfoProto) -> dict:
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value_info.type.tensor_type.shape.dim]
    if len(dims) == 4 and dims[2] and dims[3]:
        return {0: dims[3], 1: dims[2], 2: dims[1] or 3}
    return {}


def spatial(values: list[int] | None, default: int) -> tuple[int, int]:
    """Return (h, w) from a 2-element ONNX attribute."""
    values = list(values or [default, default])
    return (values[0], values[-1])


@translates("Conv")
def conv(t: Translation, node: onnx.NodeProto) -> None:
    a = attributes(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise Untranslatable(f"its Conv {node.name} uses auto_pad")
    weight = t.constant(node.input[1], f"Conv {node.name} weight").astype(np.float32)
    bias = t.constant(node.input[2], f"Conv {node.name} bias").astype(np.float32) if len(node.input) > 2 and \
        node.input[2] else None
    if weight.ndim != 4:
        raise Untranslatable(f"its Conv {node.name} is not two-dimensional")
    output = node.output[0]
    bn = t.index.only_reader(output)
    if bn is not None and bn.op_type == "BatchNormalization":  # folded: BN(conv(x)) is one conv
        weight, bias = fold_batch_norm(t, bn, weight, bias)
        t.done.add(id(bn))
        output = bn.output[0]
    kernel_h, kernel_w = weight.shape[2:]
    stride_h, stride_w = spatial(a.get("strides"), 1)
    dilation_h, dilation_w = spatial(a.get("dilations"), 1)
    top, left, bottom, right = list(a.get("pads") or [0, 0, 0, 0])
    group = int(a.get("group", 1))
    params = {0: weight.shape[0], 1: kernel_w, 11: kernel_h, 2: dilation_w, 12: dilation_h, 3: stride_w,
              13: stride_h, 4: left, 14: top, 15: right, 16: bottom, 5: int(bias is not None), 6: weight.size}
    if group > 1:
        params[7] = group
    weights = [(weight, True)] + ([(bias, False)] if bias is not None else [])
    t.add("ConvolutionDepthWise" if group > 1 else "Convolution", node, [node.input[0]], [output], params, weights)


def fold_batch_norm(t: Translation, bn: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray | None):
    scale, shift, mean, var = (t.constant(name, "BatchNormalization statistics").astype(np.float64)
                               for name in bn.input[1:5])
    factor = scale / np.sqrt(var + attributes(bn).get("epsilon", 1e-5))
    folded = weight * factor.reshape(-1, 1, 1, 1)
    base = bias.astype(np.float64) if bias is not None else np.zeros_like(mean)
    return folded.astype(np.float32), ((base - mean) * factor + shift).astype(np.float32)


@translates("Sigmoid", "Relu", "Tanh")
def activation(t: Translation, node: onnx.NodeProto) -> None:
    t.add(ACTIVATIONS[node.op_type], node, [node.input[0]])


@translates("LeakyRelu")
def leaky_relu(t: Translation, node: onnx.NodeProto) -> None:
    t.add("ReLU", node, [node.input[0]], params={0: float(attributes(node).get("alpha", 0.01))})


@translates("HardSwish")
def hard_swish(t: Translation, node: onnx.NodeProto) -> None:
    t.add("HardSwish", node, [node.input[0]], params={0: 1 / 6, 1: 0.5})


@translates("Identity", "Dropout")
def identity(t: Translation, node: onnx.NodeProto) -> None:
    t.alias(node.output[0], node.input[0])


@translates("Add", "Sub", "Mul", "Div")
def binary(t: Translation, node: onnx.NodeProto) -> None:
    first, second = node.input[:2]
    if id(node) in t.swish:
        t.add("Swish", node, [t.swish[id(node)]])
        return
    constants = [name in t.index.constants for name in (first, second)]
    if not any(constants):
        t.add("BinaryOp", node, [first, second], params={0: BINARY_OPS[node.op_type]})
        return
    value = t.index.constants[second if constants[1] else first]
    if value.size != 1 or all(constants):
        raise Untranslatable(f"its {node.op_type} {node.name} takes a constant tensor, not a scalar")
    op = BINARY_OPS[node.op_type] if constants[1] else REVERSED_SCALAR_OPS[node.op_type]
    tensor = first if constants[1] else second
    t.add("BinaryOp", node, [tensor], params={0: op, 1: 1, 2: float(value.reshape(-1)[0])})


def channel_axis(t: Translation, node: onnx.NodeProto, axis: int) -> None:
    if axis not in (1, -3):
        raise Untranslatable(f"its {node.op_type} {node.name} works on axis {axis}, not the channels")


@translates("Concat")
def concat(t: Translation, node: onnx.NodeProto) -> None:
    channel_axis(t, node, attributes(node).get("axis", 1))
    t.add("Concat", node, list(node.input), params={0: 0})


@translates("Split")
def split(t: Translation, node: onnx.NodeProto) -> None:
    a = attributes(node)
    channel_axis(t, node, a.get("axis", 0))
    if len(node.input) > 1 and node.input[1]:
        sizes = [int(v) for v in t.constant(node.input[1], f"Split {node.name} sizes").reshape(-1)]
    elif "split" in a:
        sizes = [int(v) for v in a["split"]]
    else:
        sizes = [-233] * len(node.output)  # equal parts: ncnn's "the rest, shared evenly"
    t.add("Slice", node, [node.input[0]], params={0: sizes, 1: 0})


@translates("MaxPool", "AveragePool")
def pool(t: Translation, node: onnx.NodeProto) -> None:
    a = attributes(node)
    kernel_h, kernel_w = spatial(a.get("kernel_shape"), 1)
    stride_h, stride_w = spatial(a.get("strides"), 1)
    top, left, bottom, right = list(a.get("pads") or [0, 0, 0, 0])
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pad_mode = 0 if a.get("ceil_mode", 0) else {"SAME_UPPER": 2, "SAME_LOWER": 3}.get(auto_pad, 1)
    params = {0: int(node.op_type == "AveragePool"), 1: kernel_w, 11: kernel_h, 2: stride_w, 12: stride_h,
              3: left, 13: top, 14: right, 15: bottom, 5: pad_mode}
    if node.op_type == "AveragePool":
        params[6] = int(a.get("count_include_pad", 0))
    t.add("Pooling", node, [node.input[0]], params=params)


@translates("Resize", "Upsample")
def resize(t: Translation, node: onnx.NodeProto) -> None:
    a = attributes(node)
    scales = scales_of(t.index, node)
    if scales is None or len(scales) != 4 or scales[:2] != [1.0, 1.0]:
        raise Untranslatable(f"its {node.op_type} {node.name} is not by fixed spatial scales")
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("nearest", "linear", "bilinear"):
        raise Untranslatable(f"its {node.op_type} {node.name} resizes by {mode}")
    params = {0: 1 if mode == "nearest" else 2, 1: float(scales[2]), 2: float(scales[3])}
    transform = a.get("coordinate_transformation_mode", b"")
    if mode != "nearest" and (transform.decode() if isinstance(transform, bytes) else transform) == "align_corners":
        params[6] = 1
    t.add("Interp", node, [node.input[0]], params=params)
