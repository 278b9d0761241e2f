"""ncnn's .param text: layers with their blobs and numbered parameters (developer-guide: param-and-model-file-structure).

Each blob must have one consumer in ncnn: a blob read by several layers goes through a Split layer that copies it,
as onnx2ncnn writes it. Blob and layer names are made here (short, no spaces), never taken from the ONNX file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

MAGIC = 7767517


@dataclass
class Layer:
    """One ncnn layer: type, name, input and output blobs, params by key, and its weight buffers in load order.

    A weight buffer is (array, tagged): tagged ones begin with the storage flag (ncnn loads them with type 0),
    untagged ones are raw float32 (type 1, e.g. a convolution's bias).
    """

    kind: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, int | float | list] = field(default_factory=dict)
    weights: list[tuple[np.ndarray, bool]] = field(default_factory=list)


def value_text(key: int, value) -> str:
    """Format one key=value pair; arrays take key -23300 - key and a leading element count."""
    if isinstance(value, (list, tuple)):
        items = ",".join(number_text(v) for v in value)
        return f"{-23300 - key}={len(value)},{items}"
    return f"{key}={number_text(value)}"


def number_text(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.9e}"  # a float must read back as the same float32


def with_splits(layers: list[Layer], outputs: set[str]) -> list[Layer]:
    """Insert a Split after each blob that several layers read, and point each reader at its own copy."""
    readers = Counter(blob for layer in layers for blob in layer.inputs)
    shared = {blob: count for blob, count in readers.items() if count > 1 or (count and blob in outputs)}
    taken: Counter = Counter()
    result: list[Layer] = []
    for layer in layers:
        inputs = []
        for blob in layer.inputs:
            if blob in shared:
                inputs.append(f"{blob}_s{taken[blob]}")
                taken[blob] += 1
            else:
                inputs.append(blob)
        result.append(Layer(layer.kind, layer.name, inputs, layer.outputs, layer.params, layer.weights))
        for blob in layer.outputs:
            if blob in shared:  # an output that is also extracted keeps its own name as one copy
                copies = [f"{blob}_s{i}" for i in range(readers[blob])]
                result.append(Layer("Split", f"split_{blob}", [blob], copies))
    return result


def param_text(layers: list[Layer]) -> str:
    """Return the whole .param file for layers (already with their Split layers)."""
    blobs = {blob for layer in layers for blob in layer.inputs + layer.outputs}
    lines = [str(MAGIC), f"{len(layers)} {len(blobs)}"]
    for layer in layers:
        head = [layer.kind, layer.name, str(len(layer.inputs)), str(len(layer.outputs)), *layer.inputs,
                *layer.outputs]
        lines.append(" ".join(head + [value_text(k, v) for k, v in layer.params.items()]))
    return "\n".join(lines) + "\n"
