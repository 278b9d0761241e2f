"""Write a seeded synthetic shapes dataset in ultralytics YOLO format.

    python -m server.demo.dataset --out DIR [--train 2000 --val 300 --seed 0]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from server.demo.shapes import CLASSES, Label, render_scene

logger = logging.getLogger(__name__)

FRAME_HW = (480, 640)  # the demo video's frame size
SPLITS = ("train", "val")
JPEG_QUALITY = 92


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Return the generator for one image, so each image depends only on (seed, split, index)."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def yolo_lines(labels: list[Label], hw: tuple[int, int]) -> list[str]:
    """Format labels as YOLO rows: class cx cy w h, normalised to the image size."""
    height, width = hw
    rows = []
    for label in labels:
        x1, y1, x2, y2 = label.box
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        rows.append(f"{label.class_id} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return rows


def data_yaml(root: Path) -> str:
    """Return the data.yaml text for a dataset rooted at an absolute path."""
    names = "\n".join(f"  {index}: {name}" for index, name in enumerate(CLASSES))
    return f"path: {root}\ntrain: images/train\nval: images/val\nnc: {len(CLASSES)}\nnames:\n{names}\n"


def write_split(root: Path, split: str, count: int, seed: int) -> int:
    """Render and write one split's images and label files; return the number of boxes."""
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    boxes = 0
    for index in range(count):
        image, scene_labels = render_scene(image_rng(seed, split, index), FRAME_HW)
        stem = f"{split}_{index:05d}"
        cv2.imwrite(str(images / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        lines = yolo_lines(scene_labels, FRAME_HW)
        (labels / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        boxes += len(lines)
    return boxes


def write_dataset(out: str | Path, train: int = 2000, val: int = 300, seed: int = 0) -> Path:
    """Write the whole dataset and its data.yaml under out; return the data.yaml path."""
    root = Path(out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for split, count in zip(SPLITS, (train, val)):
        started = time.perf_counter()
        boxes = write_split(root, split, count, seed)
        logger.info("%s: %d images, %d boxes in %.1fs", split, count, boxes, time.perf_counter() - started)
    yaml_path = root / "data.yaml"
    yaml_path.write_text(data_yaml(root))
    return yaml_path


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and write the dataset."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset directory to create")
    parser.add_argument("--train", type=int, default=2000, help="training images")
    parser.add_argument("--val", type=int, default=300, help="validation images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(write_dataset(args.out, args.train, args.val, args.seed))


if __name__ == "__main__":
    main()
