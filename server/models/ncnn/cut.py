"""Where the NCNN graph ends: the Detect head's raw per-level maps, found in a YOLOv8 detect ONNX graph.

Both graph shapes the server meets end the same way. Ultralytics' export concatenates each level's box conv
(4 x reg_max channels) and class conv (nc channels) and reshapes the result to b x (4 reg_max + nc) x H*W; the
built-in converter (server.models.yolov8_onnx) reshapes the two convs apart. Either way each level map is a Conv
output (or a Concat of two) read by a Reshape, whose result goes into the Concat over levels; the DFL is the one
Softmax, followed by a 1x1 Conv holding the bin values. Everything after the maps (DFL, anchors from Shape/Range,
the box decode, the class sigmoid) is done in numpy by server.vision.engines.head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper


class Untranslatable(ValueError):
    """An ONNX graph the NCNN writer cannot turn into a .param/.bin; the message is shown as why NCNN is not offered."""


@dataclass(frozen=True)
class HeadCut:
    levels: list[tuple[str, str]]  # per level, in the output's anchor order: (box map, class map) ONNX tensors
    reg_max: int
    classes: int
    bins: list[float]


class GraphIndex:
    """Who makes and who reads each tensor of an ONNX graph, and its constant values."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = numpy_helper.to_array(value.t)
            for output in node.output:
                self.producer[output] = node
            for name in node.input:
                if name:
                    self.readers.setdefault(name, []).append(node)

    def made_by(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == op_type else None

    def only_reader(self, tensor: str) -> onnx.NodeProto | None:
        readers = self.readers.get(tensor, [])
        return readers[0] if len(readers) == 1 else None

    def reaches(self, tensor: str, op_type: str, depth: int = 12) -> bool:
        """Whether a node of op_type reads tensor, directly or within depth nodes downstream."""
        frontier = [tensor]
        for _ in range(depth):
            readers = [node for name in frontier for node in self.readers.get(name, [])]
            if any(node.op_type == op_type for node in readers):
                return True
            frontier = [output for node in readers for output in node.output]
        return False


def find_head(index: GraphIndex) -> HeadCut:
    """Find the per-level box and class maps, reg_max and the DFL bins; raise Untranslatable when they are not there."""
    softmaxes = [n for n in index.graph.node if n.op_type == "Softmax"]
    if len(softmaxes) != 1:
        raise Untranslatable("its head has no single DFL softmax (not a YOLOv8-style Detect head)")
    dfl_conv = index.only_reader(softmaxes[0].output[0])
    bins = index.constants.get(dfl_conv.input[1]) if dfl_conv is not None and dfl_conv.op_type == "Conv" else None
    if bins is None or bins.ndim != 4 or bins.shape[0] != 1:
        raise Untranslatable("its DFL has no 1x1 bin convolution after the softmax")
    reg_max = int(bins.shape[1])
    boxes: dict[int, str] = {}
    scores: dict[int, str] = {}
    for reshape in (n for n in index.graph.node if n.op_type == "Reshape"):
        joined = index.only_reader(reshape.output[0])
        if joined is None or joined.op_type != "Concat":
            continue
        level = list(joined.input).index(reshape.output[0])
        source = reshape.input[0]
        conv = index.made_by(source, "Conv")
        concat = index.made_by(source, "Concat")
        if conv is not None and conv is not dfl_conv and not index.made_by(conv.input[0], "Softmax"):
            (boxes if index.reaches(joined.output[0], "Softmax") else scores)[level] = source
        elif concat is not None and len(concat.input) == 2 and all(index.made_by(t, "Conv") for t in concat.input):
            boxes[level], scores[level] = concat.input  # ultralytics' Detect: cat((cv2[i](x), cv3[i](x)), 1)
    if not boxes or sorted(boxes) != sorted(scores) or sorted(boxes) != list(range(len(boxes))):
        raise Untranslatable("its head's per-level box and class maps could not be found")
    levels = [(boxes[i], scores[i]) for i in range(len(boxes))]
    widths = {conv_channels(index, box) for box, _ in levels}
    classes = {conv_channels(index, score) for _, score in levels}
    if widths != {4 * reg_max} or len(classes) != 1:
        raise Untranslatable("its head's box and class maps do not have the channel counts a Detect head has")
    return HeadCut(levels, reg_max, classes.pop(), bins.reshape(-1).astype(float).tolist())


def conv_channels(index: GraphIndex, tensor: str) -> int:
    weight = index.constants.get(index.producer[tensor].input[1])
    return int(weight.shape[0]) if weight is not None else -1


def level_strides(index: GraphIndex, outputs: list[str], input_name: str) -> list[float]:
    """Return each map's stride from the input: the product of conv and pool strides, divided by upsampling.

    ONNX lists nodes in topological order, so one pass over them sees every input before its readers.
    """
    known: dict[str, float] = {input_name: 1.0}
    for node in index.graph.node:
        data = [name for name in node.input[:1] if name in known] if node.op_type in SPATIAL else \
            [name for name in node.input if name in known]
        if data:
            stride = node_stride(index, node, [known[name] for name in data])
            known.update((output, stride) for output in node.output)
    missing = [name for name in outputs if name not in known]
    if missing:
        raise Untranslatable(f"the head map {missing[0]} does not come from the input")
    return [known[name] for name in outputs]


SPATIAL = ("Conv", "MaxPool", "AveragePool", "Resize", "Upsample")


def node_stride(index: GraphIndex, node: onnx.NodeProto, input_strides: list[float]) -> float:
    base = max(input_strides) if input_strides else 1.0
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in ("Conv", "MaxPool", "AveragePool"):
        return base * attributes.get("strides", [1])[0]
    if node.op_type in ("Resize", "Upsample"):
        scales = scales_of(index, node)
        return base / scales[-1] if scales is not None else base
    return base


def scales_of(index: GraphIndex, node: onnx.NodeProto) -> list[float] | None:
    """The scales of a Resize (input 2) or Upsample (input 1 or attribute), or None when given as sizes."""
    position = 2 if node.op_type == "Resize" else 1
    if len(node.input) > position and node.input[position] in index.constants:
        values = index.constants[node.input[position]].reshape(-1).tolist()
        return values or None
    for attribute in node.attribute:
        if attribute.name == "scales":
            return list(attribute.floats)
    return None
