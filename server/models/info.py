"""What a model is (family, task, classes, input size) and the words used to refuse the ones the server cannot run."""

from __future__ import annotations

import re
from dataclasses import dataclass

SUPPORTED = "only YOLOv8 detect models are supported"
DEFAULT_IMGSZ = 640

# --- what was found -----------------------------------------------------------------------------------------------
MODEL_CLASS_TASK = {
    "DetectionModel": "detect",
    "YOLOv10DetectionModel": "detect",
    "RTDETRDetectionModel": "detect",
    "WorldModel": "detect",
    "YOLOEModel": "detect",
    "SegmentationModel": "segment",
    "YOLOESegModel": "segment",
    "PoseModel": "pose",
    "ClassificationModel": "classify",
    "OBBModel": "obb",
    "DepthModel": "depth",
    "SemanticSegmentationModel": "semantic",
}
MODEL_CLASS_FAMILY = {
    "RTDETRDetectionModel": "RT-DETR",
    "WorldModel": "YOLO-World",
    "YOLOEModel": "YOLOE",
    "YOLOESegModel": "YOLOE",
    "YOLOv10DetectionModel": "YOLOv10",
}
HEAD_TASK = {"Segment": "segment", "Pose": "pose", "Classify": "classify", "OBB": "obb"}
# First match wins: later families reuse earlier blocks (YOLOv10 keeps C2f, YOLO12 keeps C3k2).
LAYER_FAMILY = (
    ("RT-DETR", {"RTDETRDecoder", "HGStem", "HGBlock", "AIFI"}),
    ("YOLOE", {"YOLOEDetect", "YOLOESegment", "YOLOESegment26", "LRPCHead"}),
    ("YOLO-World", {"WorldDetect", "C2fAttn", "ImagePoolingAttn"}),
    ("YOLOv10", {"v10Detect", "SCDown", "PSA", "C2fCIB"}),
    ("YOLOv9", {"RepNCSPELAN4", "ADown", "AConv", "SPPELAN", "ELAN1", "CBLinear", "CBFuse"}),
    ("YOLO12", {"A2C2f"}),
    ("YOLO26", {"Segment26", "Pose26", "OBB26"}),
    ("YOLO11", {"C3k2", "C2PSA"}),
    ("YOLOv5u", {"C3"}),
    ("YOLOv8", {"C2f"}),
)
# Family from a model name ("yolov8n-ghost.yaml", "YOLO11n", "rtdetr-l") when no block marks it.
NAME_FAMILY = (
    ("yoloe", "YOLOE"),
    ("world", "YOLO-World"),
    ("rtdetr", "RT-DETR"),
    ("rt-detr", "RT-DETR"),
    ("yolov10", "YOLOv10"),
    ("yolov9", "YOLOv9"),
    ("yolo12", "YOLO12"),
    ("yolo26", "YOLO26"),
    ("yolo11", "YOLO11"),
    ("yolov8", "YOLOv8"),
    ("yolov6", "YOLOv6"),
    ("yolov5", "YOLOv5u"),
    ("yolov3", "YOLOv3u"),
)
TASK_WORDS = {
    "segment": "segmentation",
    "pose": "pose",
    "classify": "classification",
    "obb": "oriented-box (OBB)",
    "depth": "depth",
    "semantic": "semantic segmentation",
}
YOLOV7_MARKERS = {"IDetect", "IAuxDetect", "IBin", "SPPCSPC", "RepConv", "ReOrg"}
YOLOV9_ORIGINAL_MARKERS = {"DualDDetect", "DDetect", "TripleDDetect", "RepNCSPELAN4", "ADown", "SPPELAN"}
YOLO_NAS_KEY = re.compile(r"(^|\.)heads\.head1\.|backbone\.stem\.conv\.rbr_")


class ModelRejected(ValueError):
    """Weights the server cannot use; the message says what they are, for the person who uploaded them."""


@dataclass(frozen=True)
class ModelInfo:
    """What an accepted model is: family, task, class names in id order and input size."""

    family: str
    task: str
    classes: list[str]
    imgsz: int
    input_hw: tuple[int, int] | None = None

    @property
    def dynamic(self) -> bool:
        return self.input_hw is None

    def as_dict(self) -> dict:
        """Return the JSON fields the API shows for a model."""
        return {
            "family": self.family,
            "task": self.task,
            "classes": list(self.classes),
            "imgsz": self.imgsz,
            "dynamic": self.dynamic,
        }


def family_from_name(name: str) -> str | None:
    """Return the family a model or yaml name belongs to ("yolov8n-ghost.yaml" -> "YOLOv8"), or None."""
    lowered = name.lower()
    return next((family for key, family in NAME_FAMILY if key in lowered), None)


def refusal(family: str, task: str, kind: str) -> ModelRejected:
    """Return the rejection for a model of another family or task, naming what it is."""
    article = "an" if family.startswith(("RT-", "unrecognised")) else "a"
    if task == "detect":
        return ModelRejected(f"This is {article} {family} detect {kind}; {SUPPORTED}")
    words = TASK_WORDS.get(task, task)
    return ModelRejected(f"This is {article} {family} {words} model (task '{task}'); {SUPPORTED}")


def class_names(names: object, count: int | None = None) -> list[str]:
    """Return class names in id order from a {id: name} dict or a list, or class0.. when only a count is known."""
    if isinstance(names, dict) and names:
        try:
            by_id = {int(key): str(value) for key, value in names.items()}
        except (TypeError, ValueError):
            raise ModelRejected("The model's class names are not keyed by class id") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise ModelRejected("The model's class ids are not numbered 0..n-1")
        return [by_id[i] for i in range(len(by_id))]
    if isinstance(names, (list, tuple)) and names:
        return [str(name) for name in names]
    if count:
        return [f"class{i}" for i in range(count)]
    raise ModelRejected("The model carries no class names")


def as_size(value: object) -> int | None:
    """Return an image size from an int or an [h, w] pair (the longer side), or None when it is not one."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
        value = max(value)
    if isinstance(value, int) and not isinstance(value, bool) and 32 <= value <= 8192:
        return value
    return None
