"""The YOLOv8 Detect head as ONNX: box and class convs per level, DFL, anchors and strides into one output.

As ultralytics' export traces it: 1 x (4 + nc) x anchors, boxes as xywh in input pixels, class probabilities.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from server.models.checkpoint import class_of
from server.models.info import ModelRejected
from server.models.onnx_graph import EXPORT_HINT, Graph, Module, emit, emits

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
