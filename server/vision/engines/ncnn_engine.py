"""The NCNN engine: an ncnn.Net of the .param/.bin server.models.ncnn wrote, cut at the head's raw per-level maps.

The network ends at each level's box map (4 x reg_max channels) and class map (nc channels); the DFL, the anchors
and the class sigmoid are done here in numpy (server.vision.engines.head), which keeps the shape-dependent anchor
ops (Shape, Range, Expand) out of the translated graph. detect() asks for the anchors above conf only
(infer_above): the DFL then runs on a few dozen anchors instead of all of them (docs/engines.md, "The cut").
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from server.layout import ncnn_files_beside
from server.vision.engines import NCNN
from server.vision.engines.head import HeadDecoder

logger = logging.getLogger(__name__)

HEAD_FORMAT = 1  # bump when the .param/.bin or this description change meaning: older caches are rebuilt


@dataclass(frozen=True)
class NcnnHead:
    """What the .param does not say: its input and output blobs and how to decode them (the .json beside it)."""

    input: str
    levels: list[tuple[str, str]]  # per level, best resolution first: (box blob, class blob)
    strides: list[float]
    reg_max: int
    classes: int
    bins: list[float]  # the DFL conv's weights: 0, 1, ... reg_max - 1 in every known model
    fixed_hw: tuple[int, int] | None
    stride: int
    source: dict  # the ONNX it was made from (name, size, mtime) and HEAD_FORMAT, to tell a stale cache

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> NcnnHead:
        data = json.loads(text)
        data["levels"] = [tuple(level) for level in data["levels"]]
        data["fixed_hw"] = tuple(data["fixed_hw"]) if data["fixed_hw"] else None
        return cls(**data)


@dataclass(frozen=True)
class NcnnFiles:
    """The three files of one NCNN model; the .json is written last, so its presence means the other two are whole."""

    param: Path
    bin: Path
    head: Path

    @classmethod
    def beside(cls, onnx_path: str | Path) -> NcnnFiles:
        """Return the names the NCNN model of an ONNX is cached under, next to it: <stem>.ncnn.param/.bin/.json."""
        return cls(*ncnn_files_beside(Path(onnx_path)))

    def all(self) -> tuple[Path, Path, Path]:
        return self.param, self.bin, self.head

    def int8(self) -> NcnnFiles:
        """Return the names of this model's int8 variant beside it: <stem>.ncnn-int8.param/.bin/.json."""
        onnx = self.param.with_name(self.param.name.removesuffix(".ncnn.param") + ".onnx")
        return NcnnFiles(*ncnn_files_beside(onnx, "ncnn-int8"))


class NcnnEngine:
    """Run an NCNN model on the CPU in fp32, fp16 (fp16 storage, packing and arithmetic where the CPU has them) or
    int8 (the files of server.models.ncnn.int8: int8 convolutions, the other layers in fp16 where the CPU has fp16
    arithmetic, else in fp32)."""

    name = NCNN

    def __init__(self, files: NcnnFiles, threads: int, precision: str = "fp32"):
        import ncnn  # here, not at the top: ONNX Runtime-only callers never pay for loading it

        if precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"NCNN runs fp32, fp16 or int8, not {precision}")
        self.files, self.path, self.threads, self.precision = files, files.param, threads, precision
        self.head = NcnnHead.from_json(files.head.read_text())
        self.fixed_hw, self.stride = self.head.fixed_hw, self.head.stride
        self._ncnn = ncnn
        # int8: the layers left float run in fp16 where the CPU computes in fp16 (ARM; fewer instructions on the A76),
        # in fp32 elsewhere (x86 has no fp16 arithmetic: fp16 storage there only adds conversions)
        half = precision == "fp16" or (precision == "int8" and bool(ncnn.cpu_support_arm_asimdhp()))
        self.net = ncnn.Net()
        options = self.net.opt
        options.num_threads = threads
        options.use_fp16_storage = options.use_fp16_packed = options.use_fp16_arithmetic = half
        options.use_bf16_storage = False
        options.use_int8_inference = precision == "int8"  # only layers whose files carry int8 scales run int8
        if self.net.load_param(str(files.param)) != 0 or self.net.load_model(str(files.bin)) != 0:
            raise RuntimeError(f"ncnn could not load {files.param.name}")
        self.decoder = HeadDecoder(self.head.strides, self.head.reg_max, np.asarray(self.head.bins, np.float32))
        logger.info("loaded %s (ncnn %s, %d threads, input %s)", files.param.name, precision, threads,
                    self.fixed_hw or "dynamic")

    def raw_levels(self, tensor: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run the network; return per level the box map (4*reg_max x H x W) and class map (nc x H x W)."""
        image = np.ascontiguousarray(tensor[0])  # held while ncnn runs: ncnn.Mat wraps its memory, no copy
        extractor = self.net.create_extractor()
        extractor.input(self.head.input, self._ncnn.Mat(image))
        levels = []
        for box_blob, class_blob in self.head.levels:
            maps = []
            for blob in (box_blob, class_blob):
                status, mat = extractor.extract(blob)
                if status != 0:
                    raise RuntimeError(f"ncnn could not compute {blob} of {self.path.name}")
                maps.append(np.array(mat))
            levels.append((maps[0], maps[1]))
        return levels

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a 1x3xHxW tensor and return 1 x (4 + nc) x anchors, as the ONNX model's output0."""
        return self.decoder.decode(self.raw_levels(tensor))[None]

    def infer_above(self, tensor: np.ndarray, conf: float) -> np.ndarray:
        """As infer, with only the anchors whose best class scores above conf: what detect needs, decoded cheaply."""
        return self.decoder.decode_above(self.raw_levels(tensor), conf)[None]
