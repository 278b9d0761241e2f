"""Seeded renderer of coloured shapes on textured backgrounds, with exact visible-box labels.

Everything takes a numpy Generator, so a seed reproduces an image and its labels exactly.
Shapes are painted without anti-aliasing: a label's box is the exact extent of the shape's
visible pixels, after later shapes, distractor bars and the frame edge have hidden parts of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross")
MIN_VISIBLE = 0.4  # labels of shapes showing less than this fraction of their area are dropped
MIN_BOX_SIDE = 4  # px; a sliver this thin is not a detectable object
SIZE_RANGE = (30.0, 150.0)  # px, diameter of the circle around a shape on a 640x480 frame
SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision


@dataclass(frozen=True)
class Shape:
    """One shape to paint: class, centre (x, y) and size in frame pixels, angle, BGR colour, shading."""

    class_id: int
    center: tuple[float, float]
    size: float
    angle: float
    color: tuple[int, int, int]
    shading: float = 0.0


@dataclass(frozen=True)
class Label:
    """A visible shape: class id, tight xyxy box in pixel edges, and the visible fraction of its area."""

    class_id: int
    box: tuple[float, float, float, float]
    visible: float


def _regular_polygon(corners: int, start: float = np.pi / 2) -> np.ndarray:
    angles = start + 2 * np.pi * np.arange(corners) / corners
    return np.stack([np.cos(angles), -np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    outer = _regular_polygon(2 * points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return outer * radii[:, None]


def _cross(half_width: float = 0.3) -> np.ndarray:
    w = half_width
    corners = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w)]
    corners += [(w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    return np.array(corners, np.float64)


# Outlines in units of the circumscribed radius, centred on the origin, y pointing down.
UNIT_OUTLINES = {
    0: _regular_polygon(64),
    1: _regular_polygon(4, np.pi / 4),
    2: _regular_polygon(3),
    3: _star(),
    4: _cross(),
}


def outline(shape: Shape) -> np.ndarray:
    """Return the shape's polygon corners in frame pixels (N x 2 float)."""
    cos, sin = np.cos(shape.angle), np.sin(shape.angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    return UNIT_OUTLINES[shape.class_id] @ rotation.T * (shape.size / 2) + np.asarray(shape.center)


def polygon_mask(points: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Rasterise a polygon into a boolean mask covering its bounding box; return it and its (x, y) origin."""
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 2
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fixed = np.round((points - (x0, y0)) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return mask.astype(bool), (int(x0), int(y0))


def _clip_to_frame(origin: tuple[int, int], patch_hw: tuple[int, int], frame_hw: tuple[int, int]):
    """Return (frame slices, patch slices) of the part of a patch inside the frame, or None if outside."""
    (x0, y0), (ph, pw), (fh, fw) = origin, patch_hw, frame_hw
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + pw, fw), min(y0 + ph, fh)
    if fx0 >= fx1 or fy0 >= fy1:
        return None
    frame_part = (slice(fy0, fy1), slice(fx0, fx1))
    patch_part = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    return frame_part, patch_part


def _shaded_fill(shape: Shape, origin: tuple[int, int], patch_hw: tuple[int, int]) -> np.ndarray:
    """Return the shape's colour over its patch, with a linear light gradient across it."""
    ys, xs = np.mgrid[0 : patch_hw[0], 0 : patch_hw[1]].astype(np.float32)
    xs += origin[0] - shape.center[0]
    ys += origin[1] - shape.center[1]
    light = (xs * np.cos(shape.angle) + ys * np.sin(shape.angle)) / (shape.size / 2)
    fill = np.asarray(shape.color, np.float32) + (shape.shading * light)[..., None]
    return np.clip(fill, 0, 255).astype(np.uint8)


def paint(image: np.ndarray, owner: np.ndarray, shape: Shape, index: int) -> int:
    """Paint a shape in place and mark its pixels in the owner map; return its full (unclipped) area."""
    mask, origin = polygon_mask(outline(shape))
    parts = _clip_to_frame(origin, mask.shape, image.shape[:2])
    if parts is not None:
        frame_part, patch_part = parts
        visible = mask[patch_part]
        fill = _shaded_fill(shape, origin, mask.shape)[patch_part]
        image[frame_part][visible] = fill[visible]
        owner[frame_part][visible] = index
    return int(mask.sum())


def paint_bar(image: np.ndarray, owner: np.ndarray, ends: np.ndarray, width: int, color) -> None:
    """Paint an occluding bar (not an object) in place and clear the owner of the pixels it covers."""
    points = [tuple(int(v) for v in p) for p in np.round(ends)]
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.line(mask, points[0], points[1], 1, thickness=width, lineType=cv2.LINE_8)
    covered = mask.astype(bool)
    image[covered] = color
    owner[covered] = -1


def visible_box(owned: np.ndarray) -> tuple[float, float, float, float] | None:
    """Return the tight xyxy box (pixel edges) of the True pixels of a mask, or None if there are none."""
    rows, cols = np.flatnonzero(owned.any(axis=1)), np.flatnonzero(owned.any(axis=0))
    if rows.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def labels_from_owner(owner: np.ndarray, shapes: list[Shape], areas: list[int]) -> list[Label]:
    """Return a label for every shape whose visible part is big enough."""
    labels = []
    for index, (shape, area) in enumerate(zip(shapes, areas)):
        owned = owner == index
        visible = owned.sum() / max(area, 1)
        box = visible_box(owned)
        if box is None or visible < MIN_VISIBLE:
            continue
        if min(box[2] - box[0], box[3] - box[1]) < MIN_BOX_SIDE:
            continue
        labels.append(Label(shape.class_id, box, float(visible)))
    return labels


def compose(background: np.ndarray, shapes: list[Shape], bars=()) -> tuple[np.ndarray, list[Label]]:
    """Paint shapes in order (later ones on top), then bars; return the image and its labels."""
    image = background.copy()
    owner = np.full(image.shape[:2], -1, np.int16)
    areas = [paint(image, owner, shape, index) for index, shape in enumerate(shapes)]
    for ends, width, color in bars:
        paint_bar(image, owner, ends, width, color)
    return image, labels_from_owner(owner, shapes, areas)


# ---------------------------------------------------------------- backgrounds


def random_color(rng: np.random.Generator) -> np.ndarray:
    """Return a random BGR colour as float32."""
    return rng.uniform(0, 255, 3).astype(np.float32)


def _grid(hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    return xs, ys


def _rotated_axis(rng: np.random.Generator, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = _grid(hw)
    angle = rng.uniform(0, np.pi)
    return xs * np.cos(angle) + ys * np.sin(angle), -xs * np.sin(angle) + ys * np.cos(angle)


def _two_tone(t: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return first * (1 - t[..., None]) + second * t[..., None]


def gradient_background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Return a linear gradient between two random colours in a random direction."""
    u, _ = _rotated_axis(rng, hw)
    t = (u - u.min()) / max(float(np.ptp(u)), 1.0)
    return _two_tone(t, random_color(rng), random_color(rng))


def noise_background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Return smooth colour noise at a random scale plus fine grain."""
    cell = int(rng.integers(8, 64))
    coarse = rng.uniform(0, 255, (hw[0] // cell + 2, hw[1] // cell + 2, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    return smooth + rng.normal(0, rng.uniform(2, 20), (*hw, 3)).astype(np.float32)


def stripes_background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Return soft or hard stripes of two colours at a random angle and period."""
    u, _ = _rotated_axis(rng, hw)
    wave = np.sin(2 * np.pi * u / rng.uniform(6, 60))
    t = (wave > 0).astype(np.float32) if rng.random() < 0.5 else (wave + 1) / 2
    return _two_tone(t, random_color(rng), random_color(rng))


def checkers_background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Return a rotated checkerboard of two colours."""
    u, v = _rotated_axis(rng, hw)
    cell = rng.uniform(6, 40)
    t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    return _two_tone(t, random_color(rng), random_color(rng))


def blobs_background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Return heavily blurred random coloured discs over a base colour."""
    small_hw = (hw[0] // 4 + 1, hw[1] // 4 + 1)
    small = np.empty((*small_hw, 3), np.float32)
    small[:] = random_color(rng)
    for _ in range(int(rng.integers(8, 30))):
        center = (int(rng.integers(0, small_hw[1])), int(rng.integers(0, small_hw[0])))
        radius = int(rng.integers(4, max(5, min(small_hw) // 3)))
        cv2.circle(small, center, radius, random_color(rng).tolist(), -1)
    small = cv2.GaussianBlur(small, (0, 0), rng.uniform(3, 8))
    return cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


BACKGROUNDS = (
    gradient_background,
    noise_background,
    stripes_background,
    checkers_background,
    blobs_background,
)


def random_background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Return a random texture (sometimes a blend of two, sometimes low-contrast) as BGR uint8."""
    texture = BACKGROUNDS[rng.integers(len(BACKGROUNDS))](rng, hw)
    if rng.random() < 0.4:
        other = BACKGROUNDS[rng.integers(len(BACKGROUNDS))](rng, hw)
        alpha = rng.uniform(0.3, 0.7)
        texture = texture * alpha + other * (1 - alpha)
    if rng.random() < 0.3:
        # A washed-out texture, as busy textures behind objects usually are in real footage.
        mean = texture.mean(axis=(0, 1))
        texture = mean + (texture - mean) * rng.uniform(0.2, 0.6)
    return np.clip(texture, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- random shapes and scenes


def contrasting_color(rng: np.random.Generator, behind: np.ndarray, min_distance: float = 80.0) -> tuple:
    """Return a random BGR colour far enough from the colour behind it to be seen (best of a few tries)."""
    best, best_distance = None, -1.0
    for _ in range(8):
        color = random_color(rng)
        distance = float(np.linalg.norm(color - behind))
        if distance > best_distance:
            best, best_distance = color, distance
        if distance >= min_distance:
            break
    return tuple(int(c) for c in best)


def random_shape(
    rng: np.random.Generator,
    center: tuple[float, float],
    behind: np.ndarray,
    size_range: tuple[float, float] = SIZE_RANGE,
) -> Shape:
    """Return a shape of random class, size, angle, colour and shading at a given centre."""
    # Log-uniform sizes: as many small shapes as large ones.
    size = float(np.exp(rng.uniform(np.log(size_range[0]), np.log(size_range[1]))))
    return Shape(
        class_id=int(rng.integers(len(CLASSES))),
        center=center,
        size=size,
        angle=float(rng.uniform(0, 2 * np.pi)),
        color=contrasting_color(rng, behind),
        shading=float(rng.uniform(0, 60)),
    )


def local_color(image: np.ndarray, center: tuple[float, float], radius: int = 20) -> np.ndarray:
    """Return the mean colour of the image around a point (clipped to the frame)."""
    h, w = image.shape[:2]
    x = int(np.clip(center[0], 0, w - 1))
    y = int(np.clip(center[1], 0, h - 1))
    patch = image[max(y - radius, 0) : y + radius + 1, max(x - radius, 0) : x + radius + 1]
    return patch.reshape(-1, 3).mean(axis=0)


def random_bars(rng: np.random.Generator, hw: tuple[int, int], count: int) -> list:
    """Return occluding bars (ends, width, colour) that cross the frame at random."""
    bars = []
    for _ in range(count):
        start = rng.uniform((0, 0), (hw[1], hw[0]))
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(40, 300)
        end = start + length * np.array([np.cos(angle), np.sin(angle)])
        bars.append((np.stack([start, end]), int(rng.integers(3, 12)), random_color(rng).tolist()))
    return bars


def sensor_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Return the image with mild gaussian noise, as a camera would add."""
    noisy = image.astype(np.float32) + rng.normal(0, rng.uniform(0, 6), image.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def render_scene(
    rng: np.random.Generator,
    hw: tuple[int, int] = (480, 640),
    max_shapes: int = 8,
    size_range: tuple[float, float] = SIZE_RANGE,
) -> tuple[np.ndarray, list[Label]]:
    """Render a random labelled scene: textured background, overlapping shapes, some off-frame, some bars."""
    background = random_background(rng, hw)
    margin = size_range[1] * 0.3  # lets some shapes hang off the edge
    shapes = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        center = tuple(float(c) for c in rng.uniform((-margin, -margin), (hw[1] + margin, hw[0] + margin)))
        shapes.append(random_shape(rng, center, local_color(background, center), size_range))
    bars = random_bars(rng, hw, int(rng.integers(0, 3)) if rng.random() < 0.4 else 0)
    image, labels = compose(background, shapes, bars)
    return sensor_noise(rng, image), labels
