"""Tensors of a torch zip checkpoint, rebuilt with numpy from the stand-ins the inert reader left behind.

torch.save writes the object tree to <prefix>/data.pkl and every storage as raw bytes to <prefix>/data/<key>. In the
pickle a tensor is a call like _rebuild_tensor_v2(storage, offset, size, stride, ...) whose storage is a persistent
id ('storage', <dtype>Storage, key, location, numel). The inert reader keeps those calls as stand-ins; this module
reads the storage records they name (sizes checked against what the pickle declares, while reading) and views them
with the declared offset, size and stride. Nothing here imports torch or runs anything the file names.
"""

from __future__ import annotations

import logging
import zipfile

import numpy as np

from server.models.checkpoint import StandIn, Storage, class_of, read_member
from server.models.info import ModelRejected

logger = logging.getLogger(__name__)

# torch's storage class names -> numpy dtypes (bfloat16 has none: it is widened to float32 by hand).
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
MAX_TENSOR_DIMS = 8
MAX_STORAGE_BYTES = 2 * 1024**3  # all storages together; YOLOv8x in fp32 is 270 MB
TENSOR_REBUILDERS = ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor")
PARAMETER_REBUILDERS = ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state")
DAMAGED = "Not a model file: the checkpoint's tensor data is damaged"
MISSING = "Not a model file: the checkpoint is missing tensor data (truncated or damaged)"


class TensorReader:
    """Turn tensor stand-ins into numpy arrays, reading each storage record of an open archive once."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str = "little"):
        self.archive, self.prefix = archive, prefix
        self.swap = byteorder == "big"
        self.storages: dict[str, np.ndarray] = {}
        self.bytes_read = 0

    def array(self, tensor: object) -> np.ndarray:
        """Return a tensor stand-in (a tensor or an nn.Parameter) as a numpy array; fp16 stays fp16."""
        name = class_of(tensor)
        args = tensor.args if isinstance(tensor, StandIn) else ()
        if name in PARAMETER_REBUILDERS and args:
            return self.array(args[0])
        if name == "torch._tensor._rebuild_from_type_v2" and rebuilds_a_tensor(args):  # (function, type, its args)
            return self.view(*args[2][:4])
        if name in TENSOR_REBUILDERS and len(args) >= 4:
            return self.view(*args[:4])
        found = name or type(tensor).__name__
        raise ModelRejected(f"Not a model file: expected a tensor in the checkpoint, found {found}")

    def view(self, storage: object, offset: object, size: object, stride: object) -> np.ndarray:
        """Return a copy of storage viewed at offset with size and stride (all in elements), bounds checked."""
        flat = self.storage(storage)
        shape, steps = dims(size), dims(stride)
        if not isinstance(offset, int) or offset < 0 or len(shape) != len(steps) or len(shape) > MAX_TENSOR_DIMS:
            raise ModelRejected(DAMAGED)
        if any(n == 0 for n in shape):
            return np.zeros(shape, flat.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(shape, steps))
        if last >= flat.size:
            raise ModelRejected(DAMAGED + " (a tensor reaches past its storage)")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape, [s * item for s in steps], writeable=False)
        return np.array(view)

    def storage(self, storage: object) -> np.ndarray:
        """Return a storage record as a flat array of its dtype."""
        if not isinstance(storage, Storage) or len(storage.args) < 5:
            raise ModelRejected(DAMAGED)
        _, kind, key, _location, numel = storage.args[:5]
        key = str(key)
        if key in self.storages:
            return self.storages[key]
        type_name = class_of(kind) if isinstance(kind, StandIn) else getattr(kind, "qualname", "")
        dtype = STORAGE_DTYPES.get(type_name.rsplit(".", 1)[-1])
        if dtype is None or not isinstance(numel, int) or numel < 0:
            raise ModelRejected(f"Not a model file: the checkpoint holds tensors of an unknown kind ({type_name})")
        nbytes = numel * np.dtype(dtype).itemsize
        if self.bytes_read + nbytes > MAX_STORAGE_BYTES:
            raise ModelRejected("Not a model file: the checkpoint's tensors are implausibly large")
        try:
            raw = read_member(self.archive, f"{self.prefix}/data/{key}", nbytes, exact=True)
        except ModelRejected:  # a ValueError too: keep its message
            raise
        except KeyError:
            raise ModelRejected(MISSING) from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            raise ModelRejected(DAMAGED) from None
        self.bytes_read += nbytes
        flat = np.frombuffer(raw, dtype=dtype)
        if self.swap:
            flat = flat.byteswap()
        if type_name.endswith("BFloat16Storage"):
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        self.storages[key] = flat
        return flat


def rebuilds_a_tensor(args: tuple) -> bool:
    """Return whether _rebuild_from_type_v2's arguments are (a tensor rebuild function, a type, its >= 4 args)."""
    function_name = getattr(args[0], "qualname", "") if args else ""
    return len(args) >= 3 and function_name in TENSOR_REBUILDERS and isinstance(args[2], tuple) and len(args[2]) >= 4


def dims(value: object) -> tuple[int, ...]:
    """Return a size or stride (a tuple, or a torch.Size stand-in around one) as a tuple of ints >= 0."""
    if isinstance(value, StandIn) and class_of(value) == "torch.Size" and value.args:
        value = value.args[0]
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise ModelRejected(DAMAGED)
    return tuple(value)


def byteorder_of(archive: zipfile.ZipFile, prefix: str) -> str:
    """Return the archive's byte order record ('little' when absent, as in old torch versions)."""
    try:
        order = read_member(archive, f"{prefix}/byteorder", 16).decode("ascii", "replace").strip()
    except KeyError:
        return "little"
    if order not in ("little", "big"):
        raise ModelRejected(DAMAGED + f" (byte order {order!r})")
    return order
