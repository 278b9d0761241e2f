"""Another network as the student instead of the pruned teacher: the comparison pruning has to win.

`tools/slim.py --student yolov8n.yaml` (or a YOLOv8 detect .pt) distils the teacher into a stock-sized network on
the same footage with the same settings, so that "prune the big model" can be weighed against "distil into the
small one". A .pt's weights start the student wherever their names and shapes match the student built for the
teacher's classes (backbone, neck and box branch of any YOLOv8 of that scale; the class branch's last layers
start new unless the class counts agree); a .yaml starts from random weights.
Development side only (torch, ultralytics).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)


def student_for(path: Path, classes: dict[int, str]) -> nn.Module:
    """Build the student named by path (a YOLOv8 .yaml or detect .pt) with the teacher's classes."""
    from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415

    if path.suffix in (".yaml", ".yml"):
        model = DetectionModel(str(path), nc=len(classes), verbose=False)
        logger.info("student %s: random weights", path.name)
    else:
        source = torch.load(path, map_location="cpu", weights_only=False)["model"].float()
        model = DetectionModel(dict(source.yaml), nc=len(classes), verbose=False)
        wanted = model.state_dict()
        matching = {k: v for k, v in source.state_dict().items() if k in wanted and wanted[k].shape == v.shape}
        model.load_state_dict(matching, strict=False)
        logger.info("student %s: %d of %d tensors from its weights, the rest new", path.name, len(matching),
                    len(wanted))
    model.names = dict(classes)
    model.args = {"imgsz": 640}
    return model.float()
