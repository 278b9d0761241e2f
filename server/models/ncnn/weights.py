"""ncnn's .bin: every layer's weight buffers concatenated in layer order, each 32-bit aligned.

A tagged buffer starts with a little-endian uint32 storage flag (0 = float32); an untagged one is raw float32
(developer-guide: param-and-model-file-structure, "weight buffer"). fp32 is all that is written: NCNN converts
to fp16 itself at load time when opt.use_fp16_storage is on.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from server.models.ncnn.param import Layer

FLOAT32_FLAG = 0


def write_weights(layers: list[Layer], out: BinaryIO) -> int:
    """Write the weight buffers of layers to out; return the bytes written."""
    written = 0
    for layer in layers:
        for array, tagged in layer.weights:
            if tagged:
                written += out.write(np.uint32(FLOAT32_FLAG).tobytes())
            data = np.ascontiguousarray(array, dtype="<f4").tobytes()  # float32 is a multiple of 4 bytes: aligned
            written += out.write(data)
    return written
