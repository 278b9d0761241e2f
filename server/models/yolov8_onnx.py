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
from datetime import datetime

import numpy as np
import onnx
from onnx import TensorProto, helper

from server.models import yolov8_head  # noqa: F401 (registers the Detect head's emitter)
from server.models.info import ModelRejected
from server.models.onnx_graph import EXPORT_HINT, Graph, Module, emit, emits
from server.models.torch_zip import TensorReader
from server.models.yolov8_head import detect_strides

logger = logging.getLogger(__name__)

OPSET = 18  # what ultralytics exports with for torch >= 2.4
IR_VERSION = 10  # ultralytics caps the IR version at 10 for ONNX Runtime
CONVERTER_NAME = "edge-detect built-in converter"


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


def halves(graph: Graph, module: Module, x: str, widths: list[int]) -> list[str]:
    """Split x into two parts of the given widths (C2f's split/chunk, C2's)."""
    return graph.op("Split", [x, graph.ints(module.path, widths)], module.path, outputs=2, axis=1)


def hidden_channels(module: Module) -> int:
    hidden = module.attrs.get("c")
    if not isinstance(hidden, int) or hidden <= 0:
        raise ModelRejected(f"The {module.kind} layer {module.path} has no channel count; {EXPORT_HINT}")
    return hidden


def conv_widths(graph: Graph, conv: Module) -> tuple[int, int]:
    """Return a Conv layer's (output, input) channels as its weight has them."""
    inner = conv.need("conv")
    shape = graph.array(inner.tensor("weight")).shape
    return int(shape[0]), int(shape[1]) * int(inner.attrs.get("groups", 1))


def c2f_split(graph: Graph, module: Module) -> list[int]:
    """Return C2f's two parts as its weights have them: cv1's outputs, the second one as wide as m[0]'s input.

    Ultralytics' C2f holds both parts `c` wide; a pruned one may hold them unequal, whatever its `c` says.
    """
    total = conv_widths(graph, module.need("cv1"))[0]
    blocks = module.need("m").children()
    second = conv_widths(graph, blocks[0].need("cv1"))[1] if blocks else hidden_channels(module)
    if not 0 < second < total:
        raise ModelRejected(f"The {module.kind} layer {module.path} has inconsistent channel counts; {EXPORT_HINT}")
    return [total - second, second]


@emits("Bottleneck")
def emit_bottleneck(graph: Graph, module: Module, x: str) -> str:
    y = emit(graph, module.need("cv2"), emit(graph, module.need("cv1"), x))
    return graph.op("Add", [x, y], module.path) if module.attrs.get("add") else y


def c2f_tail(graph: Graph, module: Module, parts: list[str]) -> str:
    """The rest of C2f: each bottleneck on the last part, concat all parts, cv2."""
    for bottleneck in module.need("m").children():
        parts.append(emit(graph, bottleneck, parts[-1]))
    return emit(graph, module.need("cv2"), graph.op("Concat", parts, module.path, axis=1))


@emits("C2f")
def emit_c2f(graph: Graph, module: Module, x: str) -> str:
    """C2f: cv1, split in two, each bottleneck on the last part, concat all, cv2."""
    parts = halves(graph, module, emit(graph, module.need("cv1"), x), c2f_split(graph, module))
    return c2f_tail(graph, module, list(parts))


@emits("C2f_v2")
def emit_c2f_v2(graph: Graph, module: Module, x: str) -> str:
    """Torch-Pruning's C2f_v2 (server.models.checkpoint.SCRIPT_LAYERS): cv0(x) and cv1(x) where C2f splits cv1(x)."""
    return c2f_tail(graph, module, [emit(graph, module.need("cv0"), x), emit(graph, module.need("cv1"), x)])


@emits("C2")
def emit_c2(graph: Graph, module: Module, x: str) -> str:
    """C2: cv1, split in two, the bottlenecks on the first half, concat with the second, cv2."""
    hidden = hidden_channels(module)
    first, second = halves(graph, module, emit(graph, module.need("cv1"), x), [hidden, hidden])
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
