"""The scene graph of Sensorium World: objects with shape, colour, size, texture, position and depth, one moving
object, a background, clutter and a voice. Generation is a pure function of (seed, split, index), and the splits
(iid, compositional, Symile-style) are decided here, so every modality derived later agrees by construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 90, 230), "yellow": (235, 205, 30),
    "purple": (140, 60, 200), "cyan": (30, 200, 210), "orange": (245, 130, 30), "pink": (245, 120, 185),
}
SIZES: dict[str, float] = {"small": 0.08, "large": 0.13}  # radius as a fraction of the image side
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
DIRECTIONS: dict[str, tuple[float, float]] = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0),
                                              "right": (1.0, 0.0)}
DARK_BACKGROUNDS = ((24, 24, 28), (20, 28, 40), (36, 30, 26), (30, 34, 30))
LIGHT_BACKGROUNDS = ((214, 214, 208), (206, 212, 222), (222, 214, 204), (208, 220, 208))
LOW_VOICES = ("m1", "m3", "m7", "klatt", "croak")  # with espeak pitch 5-25: f0 about 70-90 Hz
HIGH_VOICES = ("f1", "f2", "f4")  # with espeak pitch 70-95: f0 about 220-300 Hz
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc")

# split name -> (family, stream id). The stream id keeps the random streams of different splits disjoint.
SPLITS: dict[str, tuple[str, int]] = {
    "train": ("iid", 0), "val": ("iid", 1), "test": ("iid", 2),
    "comp-train": ("compositional", 3), "comp-val": ("compositional", 4), "comp-test": ("compositional", 5),
    "symile-train": ("symile", 6), "symile-val": ("symile", 7), "symile-test": ("symile", 8),
}
MARGIN = 0.02  # free space kept between objects and around the border, as a fraction of the side


@dataclass(frozen=True)
class SceneConfig:
    """What scenes look like; everything else about a scene is drawn from its seed."""

    min_objects: int = 1
    max_objects: int = 6
    texture: bool = False  # give objects striped/dotted textures (named in captions)
    clutter: int = 0  # up to this many grey background strokes (not objects: no id, no depth)
    noise: float = 0.0  # std of Gaussian pixel noise, as a fraction of 255


@dataclass(frozen=True)
class Obj:
    """One object. `id` is its segmentation id (1..n); x, y are its centre in [0, 1] (y grows downwards) at the
    time of the still image; `z` is its depth in [0, 1] (0 = at the camera)."""

    id: int
    shape: str
    color: str
    size: str
    texture: str
    x: float
    y: float
    z: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def name(self) -> str:
        """Colours are unique within a scene, so "the red object" names exactly one object (as in Sort-of-CLEVR)."""
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Motion:
    """The one moving object: it travels from `start` to `end` with an ease-in-out profile over the clip."""

    object_id: int
    direction: str
    start: tuple[float, float]
    end: tuple[float, float]

    def position(self, t: float | np.ndarray) -> tuple[Any, Any]:
        """Centre at normalised time t in [0, 1]: start + (end - start) * (1 - cos(pi t)) / 2."""
        s = (1.0 - np.cos(np.pi * np.asarray(t, dtype=np.float64))) / 2.0
        return (self.start[0] + (self.end[0] - self.start[0]) * s, self.start[1] + (self.end[1] - self.start[1]) * s)


@dataclass(frozen=True)
class Scene:
    """A whole scene graph: the single source of truth for every modality of one sample."""

    split: str
    index: int
    objects: tuple[Obj, ...]
    motion: Motion
    background: tuple[int, int, int]
    clutter: tuple[tuple[float, float, float, float, int], ...]  # x0, y0, x1, y1, grey level
    voice: dict[str, Any]
    pixel_seed: int
    symile: dict[str, int] | None = None
    held_out: bool = False  # carries a held-out colour-shape combination (compositional test only)
    config: SceneConfig = field(default_factory=SceneConfig)

    def obj(self, object_id: int) -> Obj:
        return self.objects[object_id - 1]

    def by_color(self, color: str) -> Obj:
        return next(o for o in self.objects if o.color == color)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready scene graph (written as the sample's `.json` member)."""
        data = asdict(self)
        data.pop("config")
        data["objects"] = [asdict(o) for o in self.objects]
        return data


def split_info(split: str) -> tuple[str, int]:
    """(family, stream id) of a split name, with an error listing the known splits."""
    try:
        return SPLITS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}") from None


def held_out_combos(seed: int) -> frozenset[tuple[str, str]]:
    """(colour, shape) pairs never seen in compositional training: one shape per colour, rotating with the seed,
    so every colour and every shape still appears in training in other combinations."""
    colors = list(COLORS)
    return frozenset((color, SHAPES[(i * 2 + seed) % len(SHAPES)]) for i, color in enumerate(colors))


def scene_rng(seed: int, split: str, index: int, attempt: int = 0) -> np.random.Generator:
    """The random stream of one sample: independent of every other sample, so generation parallelises freely."""
    return np.random.default_rng([seed, split_info(split)[1], index, attempt])


def _segment_distance(px: float, py: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance from point p to segment ab (the moving object's path)."""
    ax, ay, bx, by = a[0], a[1], b[0], b[1]
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else min(1.0, max(0.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return float(np.hypot(px - (ax + t * dx), py - (ay + t * dy)))


def _draw_attributes(rng: np.random.Generator, n: int, family: str, split: str, seed: int,
                     config: SceneConfig) -> list[tuple[str, str, str, str]]:
    """Colour (unique per scene), shape, size and texture of n objects, respecting the compositional split."""
    colors = [str(c) for c in rng.choice(list(COLORS), size=n, replace=False)]
    held = held_out_combos(seed) if family == "compositional" else frozenset()
    forced = int(rng.integers(n)) if split == "comp-test" else -1
    attributes = []
    for k, color in enumerate(colors):
        if k == forced:  # comp-test: one object always shows an unseen combination
            shape = next(s for c, s in sorted(held) if c == color)
        else:
            allowed = [s for s in SHAPES if (color, s) not in held] if split in ("comp-train", "comp-val") else SHAPES
            shape = str(rng.choice(allowed))
        size = str(rng.choice(list(SIZES)))
        texture = str(rng.choice(TEXTURES)) if config.texture else "plain"
        attributes.append((color, shape, size, texture))
    return attributes


def _place(rng: np.random.Generator, attributes: list[tuple[str, str, str, str]]) -> tuple[list[tuple], Motion | None]:
    """Rejection-sample non-overlapping centres; object 0 moves along a straight path that nobody blocks."""
    placed: list[tuple[tuple[str, str, str, str], float, float]] = []
    path: tuple[tuple[float, float], tuple[float, float], str] | None = None
    for k, attrs in enumerate(attributes):
        r = SIZES[attrs[2]]
        lo, hi = r + MARGIN, 1.0 - r - MARGIN
        for _ in range(200):
            x, y = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
            if k == 0:
                direction = str(rng.choice(list(DIRECTIONS)))
                dx, dy = DIRECTIONS[direction]
                distance = float(rng.uniform(0.15, 0.4))
                ex, ey = x + dx * distance, y + dy * distance
                if lo <= ex <= hi and lo <= ey <= hi:
                    path = ((x, y), (ex, ey), direction)
                    placed.append((attrs, x, y))
                    break
                continue
            mover_r = SIZES[placed[0][0][2]]
            if _segment_distance(x, y, path[0], path[1]) < r + mover_r + MARGIN:
                continue
            if all(np.hypot(x - px, y - py) >= r + SIZES[pa[2]] + MARGIN for pa, px, py in placed[1:]):
                placed.append((attrs, x, y))
                break
        if len(placed) <= k:
            return placed, None
    return placed, Motion(0, path[2], path[0], path[1]) if path else None


def generate_scene(seed: int, split: str, index: int, config: SceneConfig = SceneConfig()) -> Scene:
    """The scene of sample `index` of `split` under `seed`: deterministic, and never the same stream twice."""
    family, _ = split_info(split)
    if not 1 <= config.min_objects <= config.max_objects <= len(COLORS):
        raise ValueError(f"need 1 <= min_objects <= max_objects <= {len(COLORS)} (colours are unique per scene)")
    held = held_out_combos(seed)
    for attempt in range(100):  # a crowded draw that could not place every object is redrawn, deterministically
        rng = scene_rng(seed, split, index, attempt)
        n = int(rng.integers(config.min_objects, config.max_objects + 1))
        attributes = _draw_attributes(rng, n, family, split, seed, config)
        placed, motion = _place(rng, attributes)
        if motion is not None and len(placed) == n:
            break
    else:
        raise RuntimeError(f"could not place {split}[{index}]'s objects in 100 draws; lower max_objects")
    order = rng.permutation(len(placed))  # ids in random order, so id 1 is not always the mover
    objects, mover_id = [], 0
    for new_id, k in enumerate(order, start=1):
        (color, shape, size, texture), x, y = placed[k]
        objects.append(Obj(new_id, shape, color, size, texture, x, y, float(rng.uniform(0.25, 0.85))))
        if k == 0:
            mover_id = new_id
    motion = Motion(mover_id, motion.direction, motion.start, motion.end)

    symile = None
    if family == "symile":
        image_bit, audio_bit = int(rng.integers(2)), int(rng.integers(2))
        symile = {"image_bit": image_bit, "audio_bit": audio_bit, "target": image_bit ^ audio_bit}
        palette = LIGHT_BACKGROUNDS if image_bit else DARK_BACKGROUNDS
        variants, pitch = (HIGH_VOICES, (70, 96)) if audio_bit else (LOW_VOICES, (5, 26))
    else:
        palette = DARK_BACKGROUNDS
        variants, pitch = LOW_VOICES + HIGH_VOICES, (30, 71)
    background = palette[int(rng.integers(len(palette)))]
    voice = {"voice": str(rng.choice(ACCENTS)), "variant": str(rng.choice(variants)),
             "speed": int(rng.integers(130, 200)), "pitch": int(rng.integers(*pitch))}
    clutter = tuple((float(rng.uniform()), float(rng.uniform()), float(rng.uniform()), float(rng.uniform()),
                     int(rng.integers(90, 160))) for _ in range(int(rng.integers(config.clutter + 1))))
    held_out = family == "compositional" and any((o.color, o.shape) in held for o in objects)
    return Scene(split, index, tuple(objects), motion, background, clutter, voice, int(rng.integers(2**31)),
                 symile, held_out, config)
