"""Frames for slimming: sampled evenly from video files or folders of images, split into training and held-back.

The held-back frames of each source are the last part of its timeline, not every k-th frame: neighbouring frames of
a video are near copies, so interleaving would let the student see the frames it is judged on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Footage:
    """Frames sampled from the footage: those trained on and those held back, with where they came from."""

    train: list[np.ndarray] = field(default_factory=list)
    held_back: list[np.ndarray] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def source_length(source: Path) -> int:
    """Frames a video holds (as its header says) or images a folder holds."""
    if source.is_dir():
        return len(image_files(source))
    capture = cv2.VideoCapture(str(source))
    try:
        if not capture.isOpened():
            raise ValueError(f"cannot open {source} as a video")
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def read_frames(source: Path, indexes: list[int]) -> list[np.ndarray]:
    """Read the frames at the given indexes (ascending) of a video or a folder of images."""
    if source.is_dir():
        files = image_files(source)
        frames = [cv2.imread(str(files[i])) for i in indexes]
        return [frame for frame in frames if frame is not None]
    wanted, frames = set(indexes), []
    capture = cv2.VideoCapture(str(source))
    try:
        index = 0
        while index <= indexes[-1]:
            ok = capture.grab()
            if not ok:
                break
            if index in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    frames.append(frame)
            index += 1
    finally:
        capture.release()
    return frames


def sample_footage(sources: list[Path], frames: int, held_back: float) -> Footage:
    """Sample about `frames` frames spread over the sources (in proportion to their length); hold back the last part."""
    lengths = [source_length(source) for source in sources]
    total = sum(lengths)
    if total == 0:
        raise ValueError("the footage holds no frames")
    footage = Footage(sources=[str(source) for source in sources])
    for source, length in zip(sources, lengths):
        share = max(2, round(frames * length / total))
        indexes = sorted(set(np.linspace(0, length - 1, min(share, length)).round().astype(int).tolist()))
        if not indexes:
            continue
        sampled = read_frames(source, indexes)
        cut = len(sampled) - max(1, round(held_back * len(sampled)))
        footage.train.extend(sampled[:cut])
        footage.held_back.extend(sampled[cut:])
        logger.info("%s: %d frames sampled of %d, %d held back", source.name, len(sampled), length, len(sampled) - cut)
    return footage
