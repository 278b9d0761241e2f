"""Distillation: the pruned student learns the unpruned teacher's boxes (and, weighted, its raw outputs) on footage.

The teacher labels each training frame once (its boxes above a confidence, after NMS) and those labels train the
student with Ultralytics' own detection loss, as a labelled dataset would. With raw_weight > 0 the student also
matches the teacher's raw class scores and box distributions on the same (flipped or not) batch. A labelled YOLO
dataset, when given, is trained on with its own labels alongside. Every epoch ends with a resumable checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.cfg import get_cfg
from ultralytics.utils.loss import v8DetectionLoss
from ultralytics.utils.nms import non_max_suppression

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 30.0  # seconds between progress lines


@dataclass
class TrainSettings:
    imgsz: int = 320
    epochs: int = 5
    batch: int = 8
    lr: float = 1e-3
    conf: float = 0.25  # teacher boxes above this become labels
    raw_weight: float = 1.0  # weight of matching the teacher's raw outputs (0: boxes only)
    zoom: float = 0.0  # each training view zoomed by 1 +- zoom and shifted by up to zoom/2 (0: flips only)
    seed: int = 0


@dataclass
class Sample:
    """One training image, letterboxed to imgsz x imgsz (CHW float 0..1), and its labels: class, cx, cy, w, h (0..1)."""

    image: torch.Tensor
    labels: torch.Tensor


def letterbox_square(frame: np.ndarray, imgsz: int) -> torch.Tensor:
    """Resize keeping the aspect and pad to imgsz x imgsz with grey (114), as Ultralytics trains; RGB CHW 0..1."""
    height, width = frame.shape[:2]
    scale = imgsz / max(height, width)
    resized = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((imgsz, imgsz, 3), 114, np.uint8)
    top, left = (imgsz - resized.shape[0]) // 2, (imgsz - resized.shape[1]) // 2
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return torch.from_numpy(canvas[:, :, ::-1].transpose(2, 0, 1).copy()).float() / 255


@torch.no_grad()
def teacher_labels(teacher: nn.Module, images: list[torch.Tensor], conf: float, batch: int) -> list[torch.Tensor]:
    """Label letterboxed images with the teacher's boxes above conf (after NMS): rows of class, cx, cy, w, h (0..1)."""
    labels = []
    for start in range(0, len(images), batch):
        stack = torch.stack(images[start:start + batch])
        output = teacher(stack)
        output = output[0] if isinstance(output, (tuple, list)) else output
        size = stack.shape[-1]
        for boxes in non_max_suppression(output, conf_thres=conf, iou_thres=0.7):
            xyxy, classes = boxes[:, :4].clamp(0, size), boxes[:, 5:6]
            centre, wh = (xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]
            labels.append(torch.cat([classes, centre / size, wh / size], 1))
    return labels


def dataset_samples(data_yaml: Path, imgsz: int) -> list[Sample]:
    """The training images of a labelled YOLO dataset (its data.yaml's train folder; labels beside in labels/)."""
    import yaml

    spec = yaml.safe_load(data_yaml.read_text())
    root = Path(spec.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else data_yaml.parent / root
    folders = spec["train"] if isinstance(spec["train"], list) else [spec["train"]]
    samples = []
    for folder in folders:
        for image_path in sorted((root / folder).rglob("*")):
            frame = cv2.imread(str(image_path)) if image_path.is_file() else None
            if frame is None:
                continue
            samples.append(Sample(letterbox_square(frame, imgsz), yolo_labels(image_path, frame.shape[:2], imgsz)))
    logger.info("labelled dataset %s: %d training images", data_yaml, len(samples))
    return samples


def yolo_labels(image_path: Path, frame_hw: tuple[int, int], imgsz: int) -> torch.Tensor:
    """Read an image's YOLO label file and move its boxes into the letterboxed square."""
    label_path = Path(str(image_path).replace("/images/", "/labels/")).with_suffix(".txt")
    rows = np.loadtxt(label_path, ndmin=2, dtype=np.float32) if label_path.is_file() else np.zeros((0, 5), np.float32)
    height, width = frame_hw
    scale = imgsz / max(height, width)
    pad_x, pad_y = (imgsz - round(width * scale)) // 2, (imgsz - round(height * scale)) // 2
    rows = rows[:, :5].copy()
    rows[:, 1] = (rows[:, 1] * width * scale + pad_x) / imgsz
    rows[:, 2] = (rows[:, 2] * height * scale + pad_y) / imgsz
    rows[:, 3] *= width * scale / imgsz
    rows[:, 4] *= height * scale / imgsz
    return torch.from_numpy(rows)


def flipped(images: torch.Tensor, labels: list[torch.Tensor], flips: torch.Tensor):
    """Mirror the chosen images left-right, and their labels' centres with them."""
    images = images.clone()
    images[flips] = images[flips].flip(-1)
    labels = [rows.clone() for rows in labels]
    for index in torch.nonzero(flips).flatten().tolist():
        labels[index][:, 1] = 1 - labels[index][:, 1]
    return images, labels


def zoomed(images: torch.Tensor, labels: list[torch.Tensor], strength: float, generator: torch.Generator):
    """Zoom each image by a random 1 +- strength about its centre and shift it by up to strength/2 of its side
    (grey where the view leaves the image), moving its labels with it; boxes less than half inside are dropped.

    The teacher's raw outputs are taken on the same zoomed views (Distiller.step), so the student learns the
    teacher's function on views the footage alone does not hold: objects nearer, farther and elsewhere.
    """
    count = len(images)
    scale = 1 + strength * (2 * torch.rand(count, generator=generator) - 1)
    shift = strength * (torch.rand(count, 2, generator=generator) - 0.5)  # in image sides
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale  # output (-1..1) -> input: (u - 2 shift) / scale
    theta[:, :, 2] = -2 * shift / scale[:, None]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    grey = 114 / 255
    views = F.grid_sample(images - grey, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + grey
    moved = []
    for rows, factor, (dx, dy) in zip(labels, scale.tolist(), shift.tolist()):
        rows = rows.clone()
        rows[:, 1] = (rows[:, 1] - 0.5) * factor + 0.5 + dx
        rows[:, 2] = (rows[:, 2] - 0.5) * factor + 0.5 + dy
        rows[:, 3:5] *= factor
        low, high = (rows[:, 1:3] - rows[:, 3:5] / 2).clamp(0, 1), (rows[:, 1:3] + rows[:, 3:5] / 2).clamp(0, 1)
        inside = (high - low).prod(1) / rows[:, 3:5].prod(1).clamp(min=1e-9)
        rows[:, 1:3], rows[:, 3:5] = (low + high) / 2, high - low
        moved.append(rows[inside >= 0.5])
    return views, moved


def as_batch(labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Labels in the layout Ultralytics' loss takes: batch_idx, cls, bboxes (normalised cx, cy, w, h)."""
    rows = [torch.cat([torch.full((len(r), 1), float(i)), r], 1) for i, r in enumerate(labels)]
    stacked = torch.cat(rows) if rows else torch.zeros((0, 6))
    return {"batch_idx": stacked[:, 0], "cls": stacked[:, 1:2], "bboxes": stacked[:, 2:6]}


def raw_distillation(student: dict, teacher: dict, reg_max: int) -> torch.Tensor:
    """How far the student's raw outputs are from the teacher's: class scores (BCE to the teacher's probabilities)
    and box distributions (KL divergence per side)."""
    scores = F.binary_cross_entropy_with_logits(student["scores"], teacher["scores"].sigmoid())
    batch, _, anchors = student["boxes"].shape
    ours = student["boxes"].view(batch, 4, reg_max, anchors).log_softmax(2)
    theirs = teacher["boxes"].view(batch, 4, reg_max, anchors).softmax(2)
    boxes = F.kl_div(ours, theirs, reduction="none").sum(2).mean()
    return scores + boxes


class Distiller:
    """Fine-tune a student on samples, an epoch at a time, with progress, time left and a checkpoint per epoch."""

    def __init__(self, student: nn.Module, teacher: nn.Module, samples: list[Sample], settings: TrainSettings,
                 resume_path: Path):  # fmt: skip
        self.student, self.teacher, self.samples, self.settings = student, teacher.eval(), samples, settings
        self.resume_path = resume_path
        student.args = get_cfg()  # the loss reads its box/cls/dfl gains from here
        for parameter in student.parameters():
            parameter.requires_grad_(True)
        self.criterion = v8DetectionLoss(student)
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=5e-4)
        self.steps_per_epoch = math.ceil(len(samples) / settings.batch)
        self.epoch, self.seconds_per_step = 0, None
        self.history: list[dict] = []
        if resume_path.is_file():
            self.resume()

    def resume(self) -> None:
        state = torch.load(self.resume_path, map_location="cpu", weights_only=False)
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.history = state["epoch"], state["history"]
        logger.info("resuming after epoch %d of %d (%s)", self.epoch, self.settings.epochs, self.resume_path)

    def save(self) -> None:
        state = {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                 "history": self.history}  # fmt: skip
        partial = self.resume_path.with_suffix(".partial")
        torch.save(state, partial)
        partial.replace(self.resume_path)

    def learning_rate(self, step: int) -> float:
        """Cosine decay from lr to lr/10 over all epochs."""
        total = self.settings.epochs * self.steps_per_epoch
        return self.settings.lr * (0.55 + 0.45 * math.cos(math.pi * step / max(1, total)))

    def run(self) -> list[dict]:
        """Train the remaining epochs; return the per-epoch history (loss, wall and CPU seconds: on a shared machine
        the CPU seconds over the threads say what the epoch takes on a machine of its own)."""
        while self.epoch < self.settings.epochs:
            started, cpu_started = time.monotonic(), time.process_time()
            loss = self.train_epoch()
            self.epoch += 1
            self.history.append({"epoch": self.epoch, "loss": loss, "seconds": round(time.monotonic() - started, 1),
                                 "cpu_seconds": round(time.process_time() - cpu_started, 1)})  # fmt: skip
            self.save()
            logger.info("epoch %d/%d: loss %.4f in %.0f s", self.epoch, self.settings.epochs, loss,
                        self.history[-1]["seconds"])  # fmt: skip
        return self.history

    def train_epoch(self) -> float:
        settings = self.settings
        generator = torch.Generator().manual_seed(settings.seed + self.epoch)
        order = torch.randperm(len(self.samples), generator=generator).tolist()
        self.student.train()
        total, last_report, started = 0.0, time.monotonic(), time.monotonic()
        for step in range(self.steps_per_epoch):
            chosen = [self.samples[i] for i in order[step * settings.batch:(step + 1) * settings.batch]]
            flips = torch.rand(len(chosen), generator=generator) < 0.5
            images, labels = flipped(torch.stack([s.image for s in chosen]), [s.labels for s in chosen], flips)
            if settings.zoom > 0:
                images, labels = zoomed(images, labels, settings.zoom, generator)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(self.epoch * self.steps_per_epoch + step)
            total += self.step(images, labels)
            if time.monotonic() - last_report > PROGRESS_EVERY_S:
                last_report = time.monotonic()
                self.report(step + 1, (last_report - started) / (step + 1), total / (step + 1))
        return total / max(1, self.steps_per_epoch)

    def step(self, images: torch.Tensor, labels: list[torch.Tensor]) -> float:
        predictions = self.student(images)
        loss, _ = self.criterion(predictions, as_batch(labels))
        loss = loss.sum() / len(images)
        if self.settings.raw_weight > 0:
            with torch.no_grad():
                _, teacher_raw = self.teacher(images)
            loss = loss + self.settings.raw_weight * raw_distillation(predictions, teacher_raw, self.criterion.reg_max)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 10.0)
        self.optimizer.step()
        return float(loss.detach())

    def report(self, step: int, seconds_per_step: float, loss: float) -> None:
        left_steps = (self.settings.epochs - self.epoch) * self.steps_per_epoch - step
        logger.info("epoch %d/%d, step %d/%d, loss %.4f, %.1f s a step, about %.0f min left",
                    self.epoch + 1, self.settings.epochs, step, self.steps_per_epoch, loss, seconds_per_step,
                    left_steps * seconds_per_step / 60)  # fmt: skip
