"""Rasterise a scene graph with numpy and PIL: RGB image, depth map and segmentation map from the same object
masks (so the three agree pixel for pixel), and video frames of the moving object. Nothing is read back from
pixels: captions and answers come from the scene graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from sensorium.data.world.scene import COLORS, Obj, Scene

SUPERSAMPLE = 4  # masks are drawn at 4x and thresholded at half coverage: smooth edges, still binary
BACKGROUND_DEPTH = 1.0


@dataclass
class Rendered:
    """One still frame: image uint8 [S, S, 3], depth float32 [S, S] in [0, 1], segmentation uint8 [S, S] (id, 0 = bg)."""

    image: np.ndarray
    depth: np.ndarray
    segmentation: np.ndarray


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Polygon vertices of a shape inscribed in the circle (cx, cy, r); None for the circle itself. Every shape
    is centred on (cx, cy), so its pixel centroid is the object's position."""
    if shape == "square":
        h = r / np.sqrt(2.0) * 1.05
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "triangle":
        return [(cx + r * np.sin(a), cy - r * np.cos(a)) for a in np.deg2rad([0.0, 120.0, 240.0])]
    if shape == "star":
        angles = np.deg2rad(np.arange(10) * 36.0)
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return [(cx + q * np.sin(a), cy - q * np.cos(a)) for q, a in zip(radii, angles)]
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}")


def object_mask(obj: Obj, x: float, y: float, size: int) -> np.ndarray:
    """Boolean [size, size] mask of `obj` centred at (x, y) (normalised), drawn supersampled in its bounding box."""
    mask = np.zeros((size, size), dtype=bool)
    reach = obj.radius * 1.1 * size + 1  # every outline stays within 1.05 r of the centre
    x0, y0 = max(0, int(np.floor(x * size - reach))), max(0, int(np.floor(y * size - reach)))
    x1, y1 = min(size, int(np.ceil(x * size + reach))), min(size, int(np.ceil(y * size + reach)))
    if x1 <= x0 or y1 <= y0:
        return mask
    w, h = x1 - x0, y1 - y0
    canvas = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    # pixel i spans [i, i + 1) with its centre at i + 0.5; PIL puts the centre of supersampled pixel j at j
    cx, cy, r = (x * size - x0) * SUPERSAMPLE - 0.5, (y * size - y0) * SUPERSAMPLE - 0.5, obj.radius * size * SUPERSAMPLE
    outline = _outline(obj.shape, cx, cy, r)
    if outline is None:
        rc = r * 0.9
        draw.ellipse([cx - rc, cy - rc, cx + rc, cy + rc], fill=255)
    else:
        draw.polygon(outline, fill=255)
    coverage = np.asarray(canvas, dtype=np.uint16).reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).sum(axis=(1, 3))
    mask[y0:y1, x0:x1] = coverage >= 255 * SUPERSAMPLE * SUPERSAMPLE // 2
    return mask


def _texture(obj: Obj, x: float, y: float, size: int) -> np.ndarray:
    """Per-pixel brightness factor [size, size] of the object's texture, anchored to its centre (moves with it)."""
    if obj.texture == "plain":
        return np.ones((size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = int(round(y * size)), int(round(x * size))
    if obj.texture == "striped":
        dark = ((yy - cy) // 2) % 2 == 0
    else:  # dotted
        dark = (((yy - cy) // 2) % 2 == 0) & (((xx - cx) // 2) % 2 == 0)
    return np.where(dark, 0.55, 1.0).astype(np.float32)


def _base(scene: Scene, size: int) -> np.ndarray:
    """Background colour plus grey clutter strokes."""
    canvas = Image.new("RGB", (size, size), tuple(scene.background))
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1, grey in scene.clutter:
        draw.line([(x0 * size, y0 * size), (x1 * size, y1 * size)], fill=(grey, grey, grey), width=1)
    return np.asarray(canvas, dtype=np.float32).copy()


def render(scene: Scene, size: int = 64, t: float = 0.0, maps: bool = True) -> Rendered:
    """Render the scene at normalised clip time `t` (0 = the still image). Far objects are painted first."""
    image = _base(scene, size)
    depth = np.full((size, size), BACKGROUND_DEPTH, dtype=np.float32)
    segmentation = np.zeros((size, size), dtype=np.uint8)
    for obj in sorted(scene.objects, key=lambda o: -o.z):
        x, y = obj.x, obj.y
        if obj.id == scene.motion.object_id:
            x, y = (float(v) for v in scene.motion.position(t))
        mask = object_mask(obj, x, y, size)
        colour = np.asarray(COLORS[obj.color], dtype=np.float32)
        shaded = colour[None, None, :] * _texture(obj, x, y, size)[..., None]
        image[mask] = shaded[mask]
        if maps:
            depth[mask] = obj.z
            segmentation[mask] = obj.id
    if scene.config.noise > 0:
        noise = np.random.default_rng([scene.pixel_seed, int(round(t * 1e6))]).normal(0.0, scene.config.noise * 255.0,
                                                                                        image.shape)
        image = image + noise
    return Rendered(np.clip(np.round(image), 0, 255).astype(np.uint8), depth, segmentation)


def render_video(scene: Scene, size: int = 64, frames: int = 8) -> np.ndarray:
    """uint8 [frames, size, size, 3]: the moving object from its start (frame 0 = the still) to its end."""
    times = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    return np.stack([render(scene, size, float(t), maps=False).image for t in times])
