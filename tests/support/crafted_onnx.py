"""Hand-made ONNX graphs that pass for YOLOv8 exports (metadata, declared input and output) but misbehave.

Each is built with the onnx helper API around a tiny real "detector": average pools at strides 8, 16 and 32 give
exactly a YOLOv8 head's anchor count for any input size, so the harmless base model streams like a real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASS_NAMES = {0: "square", 1: "circle"}
ROWS = 4 + len(CLASS_NAMES)
OPSET = 17
STRIDES = (8, 16, 32)


def metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add the metadata Ultralytics writes into an export."""
    props = {"author": "Ultralytics", "description": "Ultralytics YOLOv8n model trained on crafted.yaml",
             "task": "detect", "names": repr(CLASS_NAMES), "imgsz": "[640, 640]", "stride": "32", "batch": "1"}
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def constant(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def anchor_features() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes computing "features" (1 x ROWS x anchors, all from the image) as a YOLOv8 head would lay them out."""
    nodes, inits = [], [constant("flat", np.array([1, 3, -1], np.int64))]
    for stride in STRIDES:
        nodes += [
            helper.make_node("AveragePool", ["images"], [f"pool{stride}"], kernel_shape=[stride, stride],
                             strides=[stride, stride], ceil_mode=1),
            helper.make_node("Reshape", [f"pool{stride}", "flat"], [f"cells{stride}"]),
        ]
    nodes.append(helper.make_node("Concat", [f"cells{s}" for s in STRIDES], ["cells"], axis=2))  # 1 x 3 x anchors
    inits.append(constant("first", np.array([0], np.int64)))
    nodes.append(helper.make_node("Gather", ["cells", "first"], ["grey"], axis=1))  # 1 x 1 x anchors
    nodes.append(helper.make_node("Concat", ["grey"] * ROWS, ["features"], axis=1))  # 1 x ROWS x anchors
    return nodes, inits


def yolo_like(extra_nodes=(), extra_inits=(), head: str = "features", rows_bias=None,
              input_hw=("height", "width"), domains=()) -> onnx.ModelProto:
    """Return a model from images to output0 = head (+ a per-row bias), with Ultralytics metadata."""
    nodes, inits = anchor_features()
    nodes += list(extra_nodes)
    inits += list(extra_inits)
    bias = np.zeros(ROWS, np.float32) if rows_bias is None else np.asarray(rows_bias, np.float32)
    inits.append(constant("bias", bias.reshape(1, ROWS, 1)))
    nodes.append(helper.make_node("Add", [head, "bias"], ["output0"]))
    graph = helper.make_graph(
        nodes, "crafted",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *input_hw])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, ROWS, "anchors"])],
        initializer=inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(domain, 1) for domain in domains]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="pytorch")
    model.ir_version = 8
    return metadata(model)


def harmless() -> onnx.ModelProto:
    """Finds one box per anchor near the top-left (score 0.9 for class 0): it streams."""
    return yolo_like(rows_bias=[40, 40, 30, 30, 0.9, 0.1])


def constant_of_shape_bomb(elements: int = 2**33) -> onnx.ModelProto:
    """Asks for a float tensor of `elements` (2^33: 32 GB) and folds it into the output."""
    nodes = [
        helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"], value=constant("one", np.ones(1, np.float32))),
        helper.make_node("ReduceSum", ["bomb"], ["bomb_sum"], keepdims=0),
        helper.make_node("Mul", ["bomb_sum", "zero"], ["nothing"]),
        helper.make_node("Add", ["features", "nothing"], ["bombed"]),
    ]
    inits = [constant("bomb_shape", np.array([elements], np.int64)), constant("zero", np.float32(0))]
    return yolo_like(nodes, inits, head="bombed")


def endless_loop(trips: int = 10**9) -> onnx.ModelProto:
    """Multiplies a 256x256 matrix by the identity `trips` times before answering."""
    side = 256
    body = helper.make_graph(
        [helper.make_node("MatMul", ["state_in", "eye"], ["state_out"]),
         helper.make_node("Identity", ["go_in"], ["go_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("go_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [side, side])],
        [helper.make_tensor_value_info("go_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [side, side])],
        initializer=[constant("eye", np.eye(side, dtype=np.float32))],
    )  # fmt: skip
    nodes = [
        helper.make_node("Loop", ["trips", "go", "state0"], ["state"], body=body),
        helper.make_node("ReduceSum", ["state"], ["state_sum"], keepdims=0),
        helper.make_node("Mul", ["state_sum", "zero"], ["nothing"]),
        helper.make_node("Add", ["features", "nothing"], ["looped"]),
    ]
    inits = [constant("trips", np.array(trips, np.int64)), constant("go", np.array(True)),
             constant("state0", np.ones((side, side), np.float32)), constant("zero", np.float32(0))]
    return yolo_like(nodes, inits, head="looped")


def custom_domain_op() -> onnx.ModelProto:
    """Uses an op from a domain ONNX Runtime does not know."""
    nodes = [helper.make_node("Boom", ["features"], ["boomed"], domain="evil.ops")]
    return yolo_like(nodes, head="boomed", domains=("evil.ops",))


def declared_input(height: int, width: int) -> onnx.ModelProto:
    """A fixed-size model declaring a height x width input."""
    return yolo_like(input_hw=(height, width))


def wrong_anchor_count(anchors: int = 7) -> onnx.ModelProto:
    """Declares 1 x 6 x anchors but outputs only the first few anchors."""
    nodes = [helper.make_node("Slice", ["features", "start", "stop", "axis"], ["cut"])]
    inits = [constant("start", np.array([0], np.int64)), constant("stop", np.array([anchors], np.int64)),
             constant("axis", np.array([2], np.int64))]
    return yolo_like(nodes, inits, head="cut")


def non_finite() -> onnx.ModelProto:
    """Boxes of NaN and infinite size with an infinite class-0 score, at every anchor."""
    return yolo_like(rows_bias=[np.nan, 40, np.inf, 30, np.inf, 0.5])


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path
