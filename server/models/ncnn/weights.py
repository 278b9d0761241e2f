"""ncnn's .bin: every layer's weight buffers concatenated in layer order, each 32-bit aligned.

A tagged buffer starts with a little-endian uint32 storage flag (0 = float32, 0x000D4B38 = int8); an untagged one
is raw float32 (developer-guide: param-and-model-file-structure, "weight buffer"). The fp32 model is all float32:
NCNN converts to fp16 itself at load time when opt.use_fp16_storage is on. The int8 model (server.models.ncnn.int8)
stores its quantized convolution weights as int8, padded with zeros to 32 bits.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from server.models.ncnn.param import Layer

FLOAT32_FLAG = 0
INT8_FLAG = 0x000D4B38


def write_weights(layers: list[Layer], out: BinaryIO) -> int:
    """Write the weight buffers of layers to out; return the bytes written."""
    written = 0
    for layer in layers:
        for array, tagged in layer.weights:
            if array.dtype == np.int8:
                if not tagged:
                    raise ValueError(f"{layer.name}: int8 weights need the int8 storage flag")
                data = np.ascontiguousarray(array).tobytes()
                written += out.write(np.uint32(INT8_FLAG).astype("<u4").tobytes())
                written += out.write(data + bytes(-len(data) % 4))  # ncnn reads int8 data padded to 32 bits
                continue
            if tagged:
                written += out.write(np.uint32(FLOAT32_FLAG).astype("<u4").tobytes())
            data = np.ascontiguousarray(array, dtype="<f4").tobytes()  # float32 is a multiple of 4 bytes: aligned
            written += out.write(data)
    return written
