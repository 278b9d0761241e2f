"""Build the ONNX graph of a YOLOv8 detect checkpoint from its stand-in module tree, with numpy and onnx only.

The module tree the inert reader rebuilds is the model's own: DetectionModel.model is a Sequential of layers, each
with `f` (where its input comes from) and its submodules and attributes as ultralytics pickled them. Each layer class
is emitted as the ONNX nodes of its forward pass in eval mode, exactly as ultralytics' ONNX export traces it after
fuse(): BatchNorm folded into the convolution before it, C2f split by Split, the Detect head decoding boxes with DFL,
anchors and strides into one 1 x (4 + nc) x anchors output, input "images" with dynamic batch, height and width.
A layer class not listed in EMITTERS is refused by name. Nothing here imports torch or calls anything the file names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from server.models.checkpoint import attrs, class_of, short
from server.models.info import ModelRejected
from server.models.torch_zip import TensorReader

logger = logging.getLogger(__name__)

OPSET = 18  # what ultralytics exports with for torch >= 2.4
IR_VERSION = 10  # ultralytics caps the IR version at 10 for ONNX Runtime
EXPORT_HINT = (
    "upload an ONNX export of it instead, made where ultralytics is installed: "
    "yolo export model=your.pt format=onnx dynamic=True"
)
CONVERTER_NAME = "edge-detect built-in converter"


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


# --- convolutions -------------------------------------------------------------------------------------------------
def pair(value: object, name: str, module: Module) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ModelRejected(f"The {module.kind} layer {module.path} has an unsupported {name} {value!r}; {EXPORT_HINT}")


def folded_conv(graph: Graph, conv: Module, bn: Module | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Return a Conv2d's weight and bias with the BatchNorm after it folded in, as torch's fuse_conv_bn_weights does."""
    weight = graph.array(conv.tensor("weight"))
    bias_tensor = conv.tensor("bias")
    bias = graph.array(bias_tensor) if bias_tensor is not None else None
    if bn is None:
        return weight, bias
    mean, var = graph.array(bn.tensor("running_mean")), graph.array(bn.tensor("running_var"))
    gamma_tensor, beta_tensor = bn.tensor("weight"), bn.tensor("bias")
    gamma = graph.array(gamma_tensor) if gamma_tensor is not None else np.ones_like(mean)
    beta = graph.array(beta_tensor) if beta_tensor is not None else np.zeros_like(mean)
    eps = np.float32(bn.attrs.get("eps", 1e-5))
    rsqrt = (np.float32(1) / np.sqrt(var + eps)).astype(np.float32)
    conv_bias = bias if bias is not None else np.zeros_like(mean)
    fused_weight = weight * (gamma * rsqrt).reshape(-1, *([1] * (weight.ndim - 1)))
    fused_bias = (conv_bias - mean) * rsqrt * gamma + beta
    return fused_weight.astype(np.float32), fused_bias.astype(np.float32)


def conv2d(graph: Graph, conv: Module, x: str, bn: Module | None = None) -> str:
    """Emit an nn.Conv2d (with an optional BatchNorm folded in)."""
    if conv.kind != "Conv2d":
        raise ModelRejected(f"Expected a Conv2d at {conv.path}, found {conv.kind}; {EXPORT_HINT}")
    if conv.attrs.get("padding_mode", "zeros") != "zeros" or isinstance(conv.attrs.get("padding"), str):
        raise ModelRejected(f"The convolution {conv.path} uses padding the converter does not handle; {EXPORT_HINT}")
    weight, bias = folded_conv(graph, conv, bn)
    scope = conv.path
    inputs = [x, graph.constant(f"{scope}.weight", weight)]
    if bias is not None:
        inputs.append(graph.constant(f"{scope}.bias", bias))
    pad_h, pad_w = pair(conv.attrs.get("padding", 0), "padding", conv)
    return graph.op(
        "Conv", inputs, scope,
        dilations=list(pair(conv.attrs.get("dilation", 1), "dilation", conv)),
        group=int(conv.attrs.get("groups", 1)),
        kernel_shape=list(weight.shape[2:]),
        pads=[pad_h, pad_w, pad_h, pad_w],
        strides=list(pair(conv.attrs.get("stride", 1), "stride", conv)),
    )  # fmt: skip


@emits("Conv", "DWConv")
def emit_conv(graph: Graph, module: Module, x: str) -> str:
    """Conv: conv -> bn -> act; a fused checkpoint has no bn."""
    y = conv2d(graph, module.need("conv"), x, module.child("bn"))
    act = module.child("act")
    return emit(graph, act, y) if act is not None else y


@emits("Conv2d")
def emit_plain_conv(graph: Graph, module: Module, x: str) -> str:
    return conv2d(graph, module, x)


# --- activations --------------------------------------------------------------------------------------------------
@emits("SiLU")
def emit_silu(graph: Graph, module: Module, x: str) -> str:
    return graph.op("Mul", [x, graph.op("Sigmoid", [x], module.path)], module.path)


@emits("Identity")
def emit_identity(graph: Graph, module: Module, x):
    return x


@emits("ReLU")
def emit_relu(graph: Graph, module: Module, x: str) -> str:
    return graph.op("Relu", [x], module.path)


@emits("LeakyReLU")
def emit_leaky_relu(graph: Graph, module: Module, x: str) -> str:
    return graph.op("LeakyRelu", [x], module.path, alpha=float(module.attrs.get("negative_slope", 0.01)))


@emits("Sigmoid")
def emit_sigmoid(graph: Graph, module: Module, x: str) -> str:
    return graph.op("Sigmoid", [x], module.path)


@emits("Hardswish")
def emit_hardswish(graph: Graph, module: Module, x: str) -> str:
    return graph.op("HardSwish", [x], module.path)


# --- containers and blocks ----------------------------------------------------------------------------------------
@emits("Sequential", "ModuleList")
def emit_sequence(graph: Graph, module: Module, x):
    for child in module.children():
        x = emit(graph, child, x)
    return x


def halves(graph: Graph, module: Module, x: str, hidden: int) -> list[str]:
    """Split x into two halves of `hidden` channels (C2f's split/chunk)."""
    return graph.op("Split", [x, graph.ints(module.path, [hidden, hidden])], module.path, outputs=2, axis=1)


def hidden_channels(module: Module) -> int:
    hidden = module.attrs.get("c")
    if not isinstance(hidden, int) or hidden <= 0:
        raise ModelRejected(f"The {module.kind} layer {module.path} has no channel count; {EXPORT_HINT}")
    return hidden


@emits("Bottleneck")
def emit_bottleneck(graph: Graph, module: Module, x: str) -> str:
    y = emit(graph, module.need("cv2"), emit(graph, module.need("cv1"), x))
    return graph.op("Add", [x, y], module.path) if module.attrs.get("add") else y


@emits("C2f")
def emit_c2f(graph: Graph, module: Module, x: str) -> str:
    """C2f: cv1, split in two, each bottleneck on the last part, concat all, cv2."""
    parts = list(halves(graph, module, emit(graph, module.need("cv1"), x), hidden_channels(module)))
    for bottleneck in module.need("m").children():
        parts.append(emit(graph, bottleneck, parts[-1]))
    return emit(graph, module.need("cv2"), graph.op("Concat", parts, module.path, axis=1))


@emits("C2")
def emit_c2(graph: Graph, module: Module, x: str) -> str:
    """C2: cv1, split in two, the bottlenecks on the first half, concat with the second, cv2."""
    first, second = halves(graph, module, emit(graph, module.need("cv1"), x), hidden_channels(module))
    joined = graph.op("Concat", [emit(graph, module.need("m"), first), second], module.path, axis=1)
    return emit(graph, module.need("cv2"), joined)


@emits("C3", "C3Ghost")
def emit_c3(graph: Graph, module: Module, x: str) -> str:
    """C3: cv3(concat(m(cv1(x)), cv2(x)))."""
    main = emit(graph, module.need("m"), emit(graph, module.need("cv1"), x))
    side = emit(graph, module.need("cv2"), x)
    return emit(graph, module.need("cv3"), graph.op("Concat", [main, side], module.path, axis=1))


@emits("GhostConv")
def emit_ghost_conv(graph: Graph, module: Module, x: str) -> str:
    y = emit(graph, module.need("cv1"), x)
    return graph.op("Concat", [y, emit(graph, module.need("cv2"), y)], module.path, axis=1)


@emits("GhostBottleneck")
def emit_ghost_bottleneck(graph: Graph, module: Module, x: str) -> str:
    y = emit(graph, module.need("conv"), x)
    return graph.op("Add", [y, emit(graph, module.need("shortcut"), x)], module.path)


@emits("MaxPool2d")
def emit_max_pool(graph: Graph, module: Module, x: str) -> str:
    kernel = pair(module.attrs.get("kernel_size"), "kernel_size", module)
    stride = pair(module.attrs.get("stride") or kernel, "stride", module)
    pad_h, pad_w = pair(module.attrs.get("padding", 0), "padding", module)
    if pair(module.attrs.get("dilation", 1), "dilation", module) != (1, 1):
        raise ModelRejected(f"The pooling layer {module.path} is dilated; {EXPORT_HINT}")
    return graph.op(
        "MaxPool", [x], module.path, kernel_shape=list(kernel), strides=list(stride),
        pads=[pad_h, pad_w, pad_h, pad_w], ceil_mode=int(bool(module.attrs.get("ceil_mode", False))),
    )  # fmt: skip


@emits("SPPF")
def emit_sppf(graph: Graph, module: Module, x: str) -> str:
    """SPPF: cv1, then n max-pools in a row, concat, cv2 (+ x with shortcut)."""
    parts = [emit(graph, module.need("cv1"), x)]
    pool = module.need("m")
    for _ in range(int(module.attrs.get("n", 3))):
        parts.append(emit(graph, pool, parts[-1]))
    y = emit(graph, module.need("cv2"), graph.op("Concat", parts, module.path, axis=1))
    return graph.op("Add", [y, x], module.path) if module.attrs.get("add") else y


@emits("SPP")
def emit_spp(graph: Graph, module: Module, x: str) -> str:
    y = emit(graph, module.need("cv1"), x)
    parts = [y] + [emit(graph, pool, y) for pool in module.need("m").children()]
    return emit(graph, module.need("cv2"), graph.op("Concat", parts, module.path, axis=1))


@emits("Upsample")
def emit_upsample(graph: Graph, module: Module, x: str) -> str:
    scale = module.attrs.get("scale_factor")
    scale_h, scale_w = (scale, scale) if isinstance(scale, (int, float)) else tuple(scale or (None, None))[:2]
    if module.attrs.get("mode", "nearest") != "nearest" or module.attrs.get("size") is not None or not scale_h:
        raise ModelRejected(f"The upsampling layer {module.path} is not a nearest x-scale one; {EXPORT_HINT}")
    scales = graph.constant(f"/{module.path}/Constant", np.array([1, 1, scale_h, scale_w], np.float32))
    return graph.op(
        "Resize", [x, "", scales], module.path,
        coordinate_transformation_mode="asymmetric", mode="nearest", nearest_mode="floor",
    )  # fmt: skip


@emits("Concat")
def emit_concat(graph: Graph, module: Module, x: list[str]) -> str:
    return graph.op("Concat", list(x), module.path, axis=int(module.attrs.get("d", 1)))


# --- the Detect head ----------------------------------------------------------------------------------------------
@emits("Detect")
def emit_detect(graph: Graph, module: Module, feats: list[str]) -> str:
    """Detect: per level box (4 x reg_max) and class convs, DFL, anchors and strides -> 1 x (4 + nc) x anchors."""
    if module.attrs.get("one2one_cv2") is not None or module.attrs.get("end2end") is True:
        raise ModelRejected(f"This Detect head is end-to-end (YOLOv10/YOLO26 style); {EXPORT_HINT}")
    nc, reg_max = module.attrs.get("nc"), module.attrs.get("reg_max", 16)
    if not isinstance(nc, int) or not isinstance(reg_max, int) or nc < 1 or reg_max < 1:
        raise ModelRejected(f"The Detect head {module.path} has no class count; {EXPORT_HINT}")
    box_convs, class_convs = module.need("cv2").children(), module.need("cv3").children()
    strides = detect_strides(graph, module)
    if not (len(box_convs) == len(class_convs) == len(feats) == len(strides)):
        raise ModelRejected(f"The Detect head {module.path} does not match its inputs; {EXPORT_HINT}")
    scope = module.path
    boxes = [reshape(graph, emit(graph, m, f), [0, 4 * reg_max, -1], scope) for m, f in zip(box_convs, feats)]
    scores = [reshape(graph, emit(graph, m, f), [0, nc, -1], scope) for m, f in zip(class_convs, feats)]
    distances = dfl(graph, module, graph.op("Concat", boxes, scope, axis=2), reg_max)
    anchor_points, stride_tensor = anchors(graph, feats, strides, scope)
    dbox = decode_boxes(graph, distances, anchor_points, stride_tensor, bool(module.attrs.get("xyxy")), scope)
    classes = graph.op("Sigmoid", [graph.op("Concat", scores, scope, axis=2)], scope)
    return graph.op("Concat", [dbox, classes], scope, outputs=["output0"], axis=1)


def detect_strides(graph: Graph, module: Module) -> list[float]:
    stride = module.attrs.get("stride")
    if isinstance(stride, (list, tuple)) and all(isinstance(v, (int, float)) for v in stride):
        values = [float(v) for v in stride]
    else:
        values = graph.array(stride).reshape(-1).tolist() if stride is not None and class_of(stride) else []
    if not values or any(not v > 0 for v in values):
        raise ModelRejected(f"The Detect head {module.path} carries no strides (the model was never built)")
    return values


def reshape(graph: Graph, x: str, shape: list[int], scope: str) -> str:
    return graph.op("Reshape", [x, graph.ints(scope, shape)], scope)


def dfl(graph: Graph, module: Module, boxes: str, reg_max: int) -> str:
    """DFL: b x (4*reg_max) x a -> b x 4 x reg_max x a, softmax over the bins, expected bin via a 1x1 conv."""
    if reg_max == 1:
        return boxes
    scope = f"{module.path}.dfl"
    layer = module.child("dfl")
    conv = layer.child("conv") if layer is not None else None
    bins = graph.array(conv.tensor("weight")) if conv is not None and conv.tensor("weight") is not None else None
    if bins is None or bins.shape != (1, reg_max, 1, 1):
        bins = np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1)
    x = graph.op("Transpose", [reshape(graph, boxes, [0, 4, reg_max, -1], scope)], scope, perm=[0, 2, 1, 3])
    x = graph.op("Softmax", [x], scope, axis=1)
    x = graph.op("Conv", [x, graph.constant(f"{scope}.conv.weight", bins)], f"{scope}.conv",
                 dilations=[1, 1], group=1, kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1])  # fmt: skip
    return reshape(graph, x, [0, 4, -1], scope)


def anchors(graph: Graph, feats: list[str], strides: list[float], scope: str) -> tuple[str, str]:
    """Return anchor points (1 x 2 x N, cell centres in grid units) and strides (1 x N) from the maps' shapes.

    As ultralytics' make_anchors: per level, x then y of every cell centre (index + 0.5) in row-major order.
    """
    points, steps = [], []
    for level, (feat, stride) in enumerate(zip(feats, strides)):
        level_scope = f"{scope}/anchors{level}"
        hw = graph.op("Shape", [feat], level_scope, start=2, end=4)
        xs = cell_centres(graph, graph.op("Shape", [feat], level_scope, start=3, end=4), 0, hw, level_scope)
        ys = cell_centres(graph, graph.op("Shape", [feat], level_scope, start=2, end=3), 1, hw, level_scope)
        points.append(graph.op("Concat", [xs, ys], level_scope, axis=0))
        level_stride = graph.constant(f"/{level_scope}/Constant", np.full((1, 1), stride, np.float32))
        steps.append(graph.op("Expand", [level_stride, graph.op("Shape", [xs], level_scope)], level_scope))
    all_points = graph.op("Concat", points, scope, axis=1)
    anchor_points = graph.op("Unsqueeze", [all_points, graph.ints(scope, [0])], scope)
    return anchor_points, graph.op("Concat", steps, scope, axis=1)


def cell_centres(graph: Graph, size: str, axis: int, hw: str, scope: str) -> str:
    """Return 0.5, 1.5, ... along one side (size: a 1-element shape), spread over the H x W grid, as 1 x (H*W)."""
    count = graph.op("Squeeze", [size, graph.ints(scope, [0])], scope)
    indexes = graph.op("Range", [scalar(graph, scope, 0), count, scalar(graph, scope, 1)], scope)
    half = graph.constant(f"/{scope}/Constant", np.array(0.5, np.float32))
    centres = graph.op("Add", [graph.op("Cast", [indexes], scope, to=TensorProto.FLOAT), half], scope)
    line = graph.op("Unsqueeze", [centres, graph.ints(scope, [axis])], scope)  # 1 x W (axis 0) or H x 1 (axis 1)
    return reshape(graph, graph.op("Expand", [line, hw], scope), [1, -1], scope)


def scalar(graph: Graph, scope: str, value: int) -> str:
    return graph.constant(f"/{scope}/Constant", np.array(value, np.int64))


def decode_boxes(graph: Graph, distances: str, points: str, strides: str, xyxy: bool, scope: str) -> str:
    """dist2bbox: (left, top, right, bottom) distances from the anchor -> xywh (or xyxy), times the stride."""
    left_top, right_bottom = graph.op("Split", [distances, graph.ints(scope, [2, 2])], scope, outputs=2, axis=1)
    x1y1 = graph.op("Sub", [points, left_top], scope)
    x2y2 = graph.op("Add", [points, right_bottom], scope)
    if xyxy:
        box = graph.op("Concat", [x1y1, x2y2], scope, axis=1)
    else:
        two = graph.constant(f"/{scope}/Constant", np.array(2, np.float32))
        centre = graph.op("Div", [graph.op("Add", [x1y1, x2y2], scope), two], scope)
        size = graph.op("Sub", [x2y2, x1y1], scope)
        box = graph.op("Concat", [centre, size], scope, axis=1)
    return graph.op("Mul", [box, strides], scope)


# --- the whole model ----------------------------------------------------------------------------------------------
def emit_layers(graph: Graph, layers: list[Module]) -> str:
    """Run the layers as DetectionModel._predict_once does: each takes its input from `f` (-1: the previous one)."""
    outputs: list[str] = []
    x = "images"
    for layer in layers:
        source = layer.attrs.get("f", -1)
        if isinstance(source, int):
            if source != -1:
                x = pick(outputs, source, layer)
        elif isinstance(source, (list, tuple)):
            x = [x if j == -1 else pick(outputs, j, layer) for j in source]
        else:
            raise ModelRejected(f"The layer {layer.path} does not say where its input comes from; {EXPORT_HINT}")
        x = emit(graph, layer, x)
        outputs.append(x)
    return x


def pick(outputs: list, index: object, layer: Module):
    if not isinstance(index, int) or not 0 <= index < len(outputs):
        raise ModelRejected(f"The layer {layer.path} takes its input from a layer that does not exist")
    return outputs[index]


def model_layers(model: object) -> list[Module]:
    sequential = Module(model, "model").child("model")
    layers = [Module(layer.obj, f"model.{i}") for i, layer in enumerate(sequential.children())] if sequential else []
    if not layers or layers[-1].kind != "Detect":
        found = layers[-1].kind if layers else "no layers"
        raise ModelRejected(f"This checkpoint's last layer is {found}, not a YOLOv8 Detect head; {EXPORT_HINT}")
    return layers


def build_detect_onnx(model: object, tensors: TensorReader, names: list[str], metadata: dict) -> onnx.ModelProto:
    """Return the ONNX model of a YOLOv8 detect model stand-in: input images, output output0."""
    layers = model_layers(model)
    graph = Graph(tensors)
    output = emit_layers(graph, layers)
    if output != "output0":
        raise ModelRejected(f"The Detect head did not produce the model's output; {EXPORT_HINT}")
    channels = 4 + len(names)
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    result = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", channels, "anchors"])
    onnx_graph = helper.make_graph(graph.nodes, "main_graph", [images], [result], graph.initializers)
    model_proto = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=CONVERTER_NAME
    )
    model_proto.ir_version = IR_VERSION
    for key, value in metadata.items():
        model_proto.metadata_props.add(key=key, value=str(value))
    return model_proto


def export_metadata(model_attrs: dict, names: list[str], imgsz: int, strides: list[float], version: str) -> dict:
    """Return the metadata ultralytics writes into an ONNX export (what server inspection and AutoBackend read)."""
    yaml = model_attrs.get("yaml") if isinstance(model_attrs.get("yaml"), dict) else {}
    scale = yaml.get("scale") if yaml.get("scale") in ("n", "s", "m", "l", "x") else ""
    # Named YOLOv8 whatever the yaml file is called: the server's ONNX inspection reads the family from this.
    pretty = f"YOLOv8{scale}"
    return {
        "description": f"Ultralytics {pretty} model converted by the {CONVERTER_NAME}",
        "author": "Ultralytics",
        "date": datetime.now().astimezone().isoformat(),
        "version": version,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "stride": int(max(strides)),
        "task": "detect",
        "head": "Detect",
        "batch": 1,
        "imgsz": [imgsz, imgsz],
        "names": dict(enumerate(names)),
        "args": {"batch": 1, "dynamic": True, "half": False, "int8": False, "nms": False},
        "channels": 3,
        "end2end": False,
        "converter": CONVERTER_NAME,
    }


def detect_strides_of(model: object, tensors: TensorReader) -> list[float]:
    """Return the strides of a model stand-in's Detect head (8, 16, 32 for P3-P5)."""
    return detect_strides(Graph(tensors), model_layers(model)[-1])
