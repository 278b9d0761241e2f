"""The int8 recipes and how one is applied: ONNX Runtime static QDQ quantization with the box decoding kept in float.

The YOLOv8 head's tail (DFL, anchors, concat, sigmoid) is found by walking the graph back from its outputs, so the
exclusion holds whatever the node names (ultralytics' export or this project's own converter).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import (
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from server.models.tuning.calibration import CALIBRATION_METHODS, Calibration

logger = logging.getLogger(__name__)

HEAD_TAIL_START_OPS = ("Softmax",)  # a Conv fed by one of these belongs to the box decoding (DFL)
SHAPE_ONLY_OPS = ("Shape", "Size")  # read only a tensor's shape: the walk back does not pass them
QUANT_TYPES = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
FORMATS = {"qdq": QuantFormat.QDQ, "qop": QuantFormat.QOperator}


@dataclass(frozen=True)
class Recipe:
    """One way to quantize: format, activation/weight types, per-channel, reduce_range, calibration."""

    name: str
    activations: str = "u8"
    weights: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False
    calibration: str = "minmax"
    format: str = "qdq"
    float_head_convs: bool = False  # also keep the head's last 1x1 convs (the logits) in float


DEFAULT_RECIPES = (
    Recipe("u8s8-pc"),
    Recipe("u8s8-pc-rr", reduce_range=True),
    Recipe("s8s8-pc", activations="s8"),
    Recipe("u8s8-pc-rr-pctl", reduce_range=True, calibration="percentile"),
    Recipe("s8s8-pc-pctl", activations="s8", calibration="percentile"),
)
RECIPES_BY_NAME = {recipe.name: recipe for recipe in DEFAULT_RECIPES}


def walk_head(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Return the head's tail (the nodes that decode boxes: DFL, concat, sigmoid...) and its last convolutions.

    Walks back from the outputs, stopping at every Conv except the DFL one (fed by a Softmax), so the tail is
    found by topology, whatever the head's module index or node names; the convolutions it stops at are those
    whose outputs the box decoding reads.
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    tail: set[str] = set()
    stops: set[str] = set()
    pending = [producers[o.name] for o in model.graph.output if o.name in producers]
    while pending:
        node = pending.pop()
        if node.name in tail:
            continue
        if node.op_type == "Conv":
            feeder = producers.get(node.input[0])
            if feeder is None or feeder.op_type not in HEAD_TAIL_START_OPS:
                stops.add(node.name)  # a head convolution: quantizing it is where the speed is
                continue
        tail.add(node.name)
        if node.op_type not in SHAPE_ONLY_OPS:  # anchors come from feature-map shapes, not their values
            pending.extend(producers[name] for name in node.input if name in producers)
    return sorted(tail), sorted(stops)


def name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name, since exclusion lists are by name."""
    taken = {node.name for node in model.graph.node if node.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def preprocess_model(fp32_onnx: Path, out_path: Path) -> Path:
    """Run ONNX Runtime's quantization pre-processing (graph optimization and ONNX shape inference)."""
    # Symbolic shape inference gives up on a dynamic height and width, and when it gives up it dumps
    # sym_shape_infer_temp.onnx plus external-data files into the working directory: skip it.
    quant_pre_process(str(fp32_onnx), str(out_path), skip_symbolic_shape=True)
    model = onnx.load(str(out_path))
    name_unnamed_nodes(model)
    onnx.save(model, str(out_path))
    return out_path


def quantize_with(recipe: Recipe, prepared: Path, out_path: Path, calibration: Calibration,
                  tail: list[str], head_convs: list[str]) -> Path:
    """Quantize the prepared model with one recipe, from cached ranges or else by calibrating again."""
    reuse = {"calibration_cache_path": str(calibration.cache)} if calibration.cache else {}
    quantize_static(
        str(prepared),
        str(out_path),
        calibration_data_reader=None if calibration.cache else calibration.reader(),
        quant_format=FORMATS[recipe.format],
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=QUANT_TYPES[recipe.activations],
        weight_type=QUANT_TYPES[recipe.weights],
        nodes_to_exclude=tail + head_convs if recipe.float_head_convs else tail,
        calibrate_method=CALIBRATION_METHODS[recipe.calibration],
        extra_options={"CalibTensorRangeSymmetric": False},
        **reuse,
    )
    return out_path
