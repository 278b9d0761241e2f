"""Measure mAP of the server's own ONNX pipeline on a labelled YOLO val set, per input size and model variant.

    python -m tools.evaluate --model M.onnx --data DATA_DIR_OR_YAML [--imgsz 640 320]
        [--precision fp32 int8] [--extra-model NAME=OTHER.onnx ...] [--ultralytics]

Our numbers come from server.vision.processing + server.vision.detector.Detector (aspect-true input, e.g. 480x640
for a 640x480 frame at 640), with ultralytics' val settings: conf 0.001, NMS IoU 0.7, 300 detections.
--ultralytics also runs ultralytics' own val on the same fp32 ONNX, with rect batches (the closest to
our input shapes) and with square letterboxing (its default for exported models), for comparison.
A precision variant is just another ONNX file: int8 is the one server.models.tuning.tune caches next to the model.

Where ours and ultralytics' val differ, it is by design, not by error: re-creating ultralytics'
input, multi-label NMS and unclipped boxes with server.vision.processing and scoring with server.vision.metrics
reproduces its val mAP to 1e-7. The differences are:
- input: rect val pads half a stride more on every side (512x672 for 640x480 at 640, 256x352 at 320);
  ours pads only up to a stride multiple (480x640, 256x320). The grey border costs this demo
  model 1.6 points mAP50-95 at 640.
- boxes: ours are clipped to the frame, like the labels; ultralytics scores them unclipped (+1 point ours).
- classes: ultralytics val keeps every class above conf for a box (multi-label); ours keeps the best
  (+1 point mAP50 theirs at 320, nothing at 640).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from server.vision.detector import Detector
from server.vision.metrics import INTERPOLATIONS, MapResult, mean_average_precision
from server.vision.processing import Detections

logger = logging.getLogger(__name__)

VAL_CONF = 0.001  # ultralytics val defaults: score everything, as mAP wants the whole PR curve
VAL_IOU = 0.7
PRECISIONS = ("fp32", "int8")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class LabelledImage:
    """One val image and its YOLO label file."""

    image: Path
    label: Path


def resolve_data_yaml(data: str | Path) -> Path:
    """Return the data.yaml for a dataset directory or a yaml path."""
    path = Path(data)
    if path.is_dir():
        path = path / "data.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no data.yaml at {path}")
    return path.resolve()


def val_images_dir(data_yaml: Path) -> Path:
    """Return the val images directory a YOLO data.yaml points to."""
    import yaml

    spec = yaml.safe_load(data_yaml.read_text())
    root = Path(spec.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    return root / spec["val"]


def label_path_for(image: Path) -> Path:
    """Return the YOLO label file of an image: .../images/... -> .../labels/....txt."""
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def labelled_images(images_dir: Path) -> list[LabelledImage]:
    """Return the images of a YOLO split with their label paths, sorted by name."""
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images in {images_dir}")
    return [LabelledImage(image, label_path_for(image)) for image in images]


def read_yolo_labels(path: Path, frame_hw: tuple[int, int]) -> Detections:
    """Read a YOLO label file into xyxy frame-pixel boxes (missing file: no objects)."""
    has_rows = path.exists() and path.stat().st_size > 0
    rows = np.loadtxt(path, ndmin=2, dtype=np.float64) if has_rows else np.zeros((0, 5))
    height, width = frame_hw
    cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    return Detections(boxes, np.ones(len(rows), np.float32), rows[:, 0].astype(np.int64))


def predict_and_label(
    detector: Detector, samples: list[LabelledImage], imgsz: int, conf: float = VAL_CONF, iou: float = VAL_IOU
) -> tuple[list[Detections], list[Detections]]:
    """Run our pipeline on every sample; return its detections and the ground truth, image by image."""
    predictions, truths = [], []
    for sample in samples:
        frame = cv2.imread(str(sample.image))
        predictions.append(detector.detect(frame, imgsz, conf, iou))
        truths.append(read_yolo_labels(sample.label, frame.shape[:2]))
    return predictions, truths


def evaluate_model(
    model: Path,
    samples: list[LabelledImage],
    imgsz: int,
    threads: int | None = None,
    interpolation: str = "ultralytics",
) -> tuple[MapResult, float]:
    """Return our pipeline's mAP for one model at one input size, and the seconds it took."""
    started = time.perf_counter()
    predictions, truths = predict_and_label(Detector(model, threads), samples, imgsz)
    return mean_average_precision(predictions, truths, interpolation), time.perf_counter() - started


def ultralytics_val(model: Path, data_yaml: Path, imgsz: int, rect: bool) -> dict[str, float]:
    """Run ultralytics' own val on an ONNX model, offline; return its mAP50 and mAP50-95."""
    os.environ["YOLO_OFFLINE"] = "1"
    import ultralytics.data.utils
    from ultralytics import YOLO

    ultralytics.data.utils.check_font = lambda *args, **kwargs: None  # it probes the web for a font
    with tempfile.TemporaryDirectory() as runs:  # keep its run folder out of the working directory
        metrics = YOLO(str(model), task="detect").val(
            data=str(data_yaml), imgsz=imgsz, rect=rect, batch=16, device="cpu", plots=False, verbose=False,
            project=runs, name="val",
        )
    return {"mAP50": float(metrics.box.map50), "mAP50-95": float(metrics.box.map)}


def precision_variant(model: Path, precision: str) -> Path:
    """Return the ONNX file of a precision variant of a model: the model itself for fp32."""
    if precision == "fp32":
        return model
    from server.models.tuning.tune import cached_tuning, int8_path_for

    report = cached_tuning(model)
    if report is None:
        raise SystemExit(f"no int8 model tuned as {int8_path_for(model)}: build it with server.models.tuning.tune, "
                         "or pass --extra-model int8=PATH")
    return Path(report.path)


def parse_named_models(values: list[str]) -> dict[str, Path]:
    """Parse NAME=PATH pairs."""
    models = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
        models[name] = Path(path)
    return models


def input_description(frame_hw: tuple[int, int], imgsz: int) -> str:
    """Describe the aspect-true network input our pipeline uses for a frame size."""
    from server.vision.processing import input_shape_for

    height, width = input_shape_for(frame_hw, imgsz)
    return f"{height}x{width}"


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="fp32 ONNX model")
    parser.add_argument("--data", required=True, help="dataset directory or its data.yaml")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640], help="input sizes (long side)")
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISIONS, default=["fp32"], help="variants of --model to score"
    )
    parser.add_argument(
        "--extra-model", action="append", default=[], metavar="NAME=PATH", help="another ONNX variant: int8=m.onnx"
    )
    parser.add_argument("--ultralytics", action="store_true", help="also run ultralytics val on the fp32 model")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default="ultralytics", help="AP rule")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N val images (ours only)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


def print_row(row: dict) -> None:
    """Print one result line of the table."""
    print(
        f"{row['model']:<10} {row['imgsz']:>5} {row['pipeline']:<26} "
        f"{row['mAP50']:>7.4f} {row['mAP50-95']:>8.4f} {row['seconds']:>8.1f}",
        flush=True,
    )


def our_rows(models: dict[str, Path], samples: list[LabelledImage], imgsz: int, args) -> list[dict]:
    """Evaluate every model with our pipeline at one size."""
    frame_hw = cv2.imread(str(samples[0].image)).shape[:2]
    rows = []
    for name, path in models.items():
        result, seconds = evaluate_model(path, samples, imgsz, args.threads, args.interpolation)
        pipeline = f"ours {input_description(frame_hw, imgsz)}"
        rows.append(
            {"model": name, "imgsz": imgsz, "pipeline": pipeline, "mAP50": result.map50,
             "mAP50-95": result.map50_95, "seconds": seconds}
        )
        print_row(rows[-1])
    return rows


def ultralytics_rows(model: Path, data_yaml: Path, imgsz: int) -> list[dict]:
    """Run ultralytics val with rect batches and with square letterboxing at one size."""
    rows = []
    for rect in (True, False):
        started = time.perf_counter()
        metrics = ultralytics_val(model, data_yaml, imgsz, rect)
        pipeline = "ultralytics val " + ("rect" if rect else "square")
        rows.append(
            {"model": "fp32", "imgsz": imgsz, "pipeline": pipeline, **metrics,
             "seconds": time.perf_counter() - started}
        )
        print_row(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> None:
    """Evaluate every model at every size and print a table."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    data_yaml = resolve_data_yaml(args.data)
    samples = labelled_images(val_images_dir(data_yaml))[: args.limit or None]
    variants = {precision: precision_variant(args.model, precision) for precision in args.precision}
    models = {**variants, **parse_named_models(args.extra_model)}
    print(f"{len(samples)} val images from {data_yaml}")
    print(f"conf {VAL_CONF}, NMS IoU {VAL_IOU}, max 300 detections, AP interpolation: {args.interpolation}")
    print(f"{'model':<10} {'imgsz':>5} {'pipeline':<26} {'mAP50':>7} {'mAP50-95':>8} {'seconds':>8}")
    rows = []
    for imgsz in args.imgsz:
        rows += our_rows(models, samples, imgsz, args)
        if args.ultralytics:
            rows += ultralytics_rows(args.model, data_yaml, imgsz)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
