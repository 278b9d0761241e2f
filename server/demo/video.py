"""Write the demo video: shapes drifting and turning across a slowly panning textured background.

    python -m server.demo.video --out demo.mp4 [--seconds 20 --fps 25 --seed 0]
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from server.demo.shapes import Shape, compose, random_background, random_shape

logger = logging.getLogger(__name__)

LANES = 7  # shapes on screen at once
SPEED_RANGE = (40.0, 140.0)  # px per second
SPIN_RANGE = (0.2, 1.2)  # radians per second
PAN_FRACTION = 0.25  # how far the background pans, as a fraction of the frame
# The demo shows what the model does well: shapes under ~50 px are where this small model misses most
# (its accuracy over the full 30-150 px range is in the model card).
SIZE_RANGE = (60.0, 150.0)


@dataclass(frozen=True)
class Trip:
    """One shape crossing the frame in a straight line from start to end, spinning as it goes."""

    shape: Shape
    start: np.ndarray
    velocity: np.ndarray
    spin: float
    begins: float
    ends: float

    def shape_at(self, t: float) -> Shape:
        """Return the shape as it is at time t."""
        age = t - self.begins
        center = self.start + self.velocity * age
        angle = self.shape.angle + self.spin * age
        return replace(self.shape, center=(float(center[0]), float(center[1])), angle=angle)


def edge_point(rng: np.random.Generator, side: int, size_wh: tuple[int, int], margin: float) -> np.ndarray:
    """Return a random point just outside one side of the frame (0 left, 1 top, 2 right, 3 bottom)."""
    width, height = size_wh
    along = rng.uniform(0.1, 0.9)
    return np.array(
        [
            (-margin, along * height),
            (along * width, -margin),
            (width + margin, along * height),
            (along * width, height + margin),
        ][side]
    )


def random_trip(rng: np.random.Generator, begins: float, size_wh: tuple[int, int], behind: np.ndarray) -> Trip:
    """Return a trip of a random shape from one side of the frame to another."""
    shape = random_shape(rng, (0.0, 0.0), behind, SIZE_RANGE)
    margin = shape.size / 2 + 2
    entry_side = int(rng.integers(4))
    exit_side = (entry_side + int(rng.integers(1, 4))) % 4
    start = edge_point(rng, entry_side, size_wh, margin)
    end = edge_point(rng, exit_side, size_wh, margin)
    distance = float(np.linalg.norm(end - start))
    speed = rng.uniform(*SPEED_RANGE)
    spin = rng.uniform(*SPIN_RANGE) * rng.choice([-1, 1])
    velocity = (end - start) / distance * speed
    return Trip(shape, start, velocity, float(spin), begins, begins + distance / speed)


def plan_lane(
    rng: np.random.Generator, seconds: float, size_wh: tuple[int, int], behind: np.ndarray
) -> list[Trip]:
    """Return back-to-back trips covering [0, seconds]; the first is already under way at t=0."""
    first = random_trip(rng, 0.0, size_wh, behind)
    head_start = rng.uniform(0, first.ends)
    trips = [replace(first, begins=-head_start, ends=first.ends - head_start)]
    while trips[-1].ends < seconds:
        gap = rng.uniform(0, 1.5)
        trips.append(random_trip(rng, trips[-1].ends + gap, size_wh, behind))
    return trips


def shapes_at(lanes: list[list[Trip]], t: float) -> list[Shape]:
    """Return every shape on its way at time t."""
    return [trip.shape_at(t) for lane in lanes for trip in lane if trip.begins <= t < trip.ends]


def pan_offset(t: float, seconds: float, room: tuple[int, int]) -> tuple[int, int]:
    """Return the background crop's top-left at time t: one slow back-and-forth over the video."""
    phase = (1 - np.cos(2 * np.pi * t / seconds)) / 2
    return int(round(room[0] * phase)), int(round(room[1] * phase))


def render_frames(seconds: float = 20, fps: float = 25, size: tuple[int, int] = (640, 480), seed: int = 0):
    """Yield the demo video's BGR frames."""
    rng = np.random.default_rng(seed)
    width, height = size
    room = (int(width * PAN_FRACTION), int(height * PAN_FRACTION))
    background = random_background(rng, (height + room[1], width + room[0]))
    behind = background.reshape(-1, 3).mean(axis=0)
    lanes = [plan_lane(rng, seconds, size, behind) for _ in range(LANES)]
    for index in range(int(round(seconds * fps))):
        t = index / fps
        x, y = pan_offset(t, seconds, room)
        frame, _ = compose(background[y : y + height, x : x + width], shapes_at(lanes, t))
        yield frame


def write_demo_video(
    path: str | Path, seconds: float = 20, fps: float = 25, size: tuple[int, int] = (640, 480), seed: int = 0
) -> Path:
    """Write the demo video as mp4 (mp4v) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a video writer for {path}")
    try:
        for frame in render_frames(seconds, fps, size, seed):
            writer.write(frame)
    finally:
        writer.release()
    logger.info("wrote %s (%.0fs at %g fps) in %.1fs", path, seconds, fps, time.perf_counter() - started)
    return path


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and write the demo video."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="mp4 file to write")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fps", type=float, default=25)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(write_demo_video(args.out, args.seconds, args.fps, (args.width, args.height), args.seed))


if __name__ == "__main__":
    main()
