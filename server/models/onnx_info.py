"""Identify an ONNX export: Ultralytics metadata, one 1x3xHxW float input, one 1 x (4+nc) x anchors output.

What the file declares is checked first (metadata, input size within what the server offers, only standard ONNX
op domains, output shape); then the model is run once, in a child process under a memory and time budget
(server.models.trial_run), since a graph can declare one thing and do another.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

from server.models.info import (
    DEFAULT_IMGSZ,
    SUPPORTED,
    ModelInfo,
    ModelRejected,
    as_size,
    class_names,
    family_from_name,
    refusal,
)
from server.models.trial_run import DEFAULT_BUDGET, TrialBudget, trial_run
from server.vision.settings import IMGSZ_CHOICES

logger = logging.getLogger(__name__)

MAX_METADATA_CHARS = 1_000_000
STANDARD_DOMAINS = ("", "ai.onnx")  # what ultralytics' exports (and this project's converter) use
MIN_INPUT_SIDE = 32


def inspect_onnx(path: str | Path, trial: TrialBudget | None = DEFAULT_BUDGET) -> ModelInfo:
    """Identify an ONNX export by its Ultralytics metadata and I/O shapes; raise ModelRejected unless YOLOv8 detect.

    With a trial budget (the default) the model must also run once within it; trial=None checks the file only.
    """
    info = identify_onnx(load_onnx(path))
    if trial is not None:
        trial_run(path, len(info.classes), info.input_hw, trial)
    return info


def identify_onnx(model) -> ModelInfo:
    """Identify a parsed ONNX model (what load_onnx returned) without running it; raise ModelRejected unless usable."""
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
    check_input_size(input_hw)
    check_op_domains(model)
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


def check_input_size(input_hw: tuple[int, int] | None) -> None:
    """Refuse a fixed input larger than the largest size the server offers (or too small to hold a stride)."""
    if input_hw is None:
        return
    largest = max(IMGSZ_CHOICES)
    if max(input_hw) > largest or min(input_hw) < MIN_INPUT_SIDE:
        raise ModelRejected(
            f"This ONNX model's input is fixed at {input_hw[0]} x {input_hw[1]}; the server offers input sizes from "
            f"{MIN_INPUT_SIDE} to {largest} pixels (export with imgsz={largest} or dynamic=True)"
        )


def graph_nodes(graph):
    """Yield every node of a graph, including those inside subgraphs (Loop, If, Scan bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            subgraphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
            for subgraph in subgraphs:
                yield from graph_nodes(subgraph)


def check_op_domains(model) -> None:
    """Refuse ops outside the standard ONNX domain: custom ops need code the server does not have (or trust)."""
    foreign = sorted({f"{node.domain}:{node.op_type}" for node in graph_nodes(model.graph)
                      if node.domain not in STANDARD_DOMAINS})
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ModelRejected(
            f"This ONNX model uses ops outside the standard ONNX set ({shown}); a YOLOv8 export needs none"
        )
