"""The benchmark's records: a variant of this project's pipeline, and what each kind of row measured."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

import numpy as np

from server.vision.processing import Detections

REFERENCE = "fp32-640"
ULTRALYTICS_ONNX = "ultralytics-onnx"
ULTRALYTICS_PT = "ultralytics-pt"


@dataclass(frozen=True)
class Variant:
    """One configuration of this project's pipeline (threads: ONNX Runtime intra-op threads, None: --threads)."""

    precision: str
    imgsz: int
    detect_every: int = 1
    threads: int | None = None

    @property
    def name(self) -> str:
        suffix = f"-de{self.detect_every}" if self.detect_every > 1 else ""
        suffix += f"-t{self.threads}" if self.threads else ""
        return f"{self.precision}-{self.imgsz}{suffix}"

    @classmethod
    def parse(cls, text: str) -> Variant:
        """Parse a name such as fp32-640, int8-320-de3 or fp32-640-t1 (one ONNX Runtime thread)."""
        precision, *rest = text.split("-")
        try:
            imgsz, every, threads = int(rest[0]), 1, None
            for part in rest[1:]:
                if part.startswith("de"):
                    every = int(part[2:])
                elif part.startswith("t"):
                    threads = int(part[1:])
                else:
                    raise ValueError(part)
            variant = cls(precision, imgsz, every, threads)
        except (IndexError, ValueError):
            raise argparse.ArgumentTypeError(
                f"variant {text!r} is not like fp32-640, int8-320-de3 or fp32-640-t1") from None
        if variant.precision not in ("fp32", "int8"):
            raise argparse.ArgumentTypeError(f"precision must be fp32 or int8 in {text!r}")
        return variant


@dataclass
class Row:
    """What one pipeline measured on the video."""

    name: str
    kind: str  # "ultralytics" or "pipeline"
    frames: int
    fps: float
    stage_ms: dict[str, float]
    agreement: float | None = None
    ratio: float | None = None  # fps over Ultralytics-ONNX's, run just before and after each segment of this row
    detect_every: int = 1
    latency_ms: float | None = None  # decode to publish, per frame (our producer rows)
    peer_fps: float | None = None  # Ultralytics-ONNX in the segments bracketing this row's
    detections: list[Detections] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("detections")
        return data


@dataclass
class HttpRow:
    """The real server's producer rate (its own frame counter) with n viewers, and with none just before and after."""

    variant: str
    viewers: int
    fps_per_viewer: list[float]
    server_fps: float  # frames the producer published per second while the viewers read
    idle_fps: float | None = None  # the same with no viewer, mean of just before and just after
    viewer_cap: float | None = None
    error: str | None = None

    @property
    def mean_fps(self) -> float:
        return float(np.mean(self.fps_per_viewer)) if self.fps_per_viewer else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "mean_fps": round(self.mean_fps, 2)}


@dataclass
class Target:
    """One speed goal from the issue, and how far this run is from it."""

    name: str
    goal: str
    value: str
    met: bool | None  # None: not measured in this run

    def as_dict(self) -> dict:
        return asdict(self)
