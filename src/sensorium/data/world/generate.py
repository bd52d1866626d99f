"""Sensorium World samples: every modality of a sample is produced from its scene graph by one entry of
`PRODUCERS` (the only place that lists what World can make), and `write_world` streams samples, generated in
parallel but written in order, into byte-deterministic WebDataset shards with a JSON summary."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from dataclasses import asdict, dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image

from sensorium.core.progress import progress_bar
from sensorium.data.shards import ShardWriter, encode_sample
from sensorium.data.tts import Voice, synthesize
from sensorium.data.world.language import QUESTION_TYPES, caption, motion_caption, questions
from sensorium.data.world.render import Rendered, render, render_video
from sensorium.data.world.scene import Scene, SceneConfig, generate_scene, held_out_combos, split_info
from sensorium.modalities.video import Clip

TIMESERIES_CHANNELS = ("x", "y", "vx", "vy", "ax", "ay")
MOTION_MODALITIES = frozenset({"video", "timeseries"})  # when present, text and qa also describe the motion


@dataclass(frozen=True)
class WorldConfig:
    """Everything about World samples except seed, split and index (flat, so YAML/CLI overrides stay simple)."""

    image_size: int = 64
    video_size: int = 0  # 0 = same as image_size
    video_frames: int = 8
    fps: float = 8.0
    ts_steps: int = 32
    sensor_noise: float = 0.0  # std of Gaussian noise on the trace, in trace units
    qa_per_type: int = 1
    min_objects: int = 1
    max_objects: int = 6
    texture: bool = False
    clutter: int = 0
    noise: float = 0.0

    def scene_config(self) -> SceneConfig:
        return SceneConfig(self.min_objects, self.max_objects, self.texture, self.clutter, self.noise)


class Context:
    """Lazily derived facts of one sample, shared by its producers (one render feeds image, depth, segmentation)."""

    def __init__(self, scene: Scene, seed: int, config: WorldConfig, wanted: frozenset[str]):
        self.scene, self.seed, self.config, self.wanted = scene, seed, config, wanted

    def rng(self, purpose: int) -> np.random.Generator:
        """A stream per purpose (caption, motion, qa, sensor) so adding one modality never changes another."""
        return np.random.default_rng([self.seed, split_info(self.scene.split)[1], self.scene.index, 1000 + purpose])

    @property
    def with_motion(self) -> bool:
        return bool(self.wanted & MOTION_MODALITIES)

    @cached_property
    def still(self) -> Rendered:
        return render(self.scene, self.config.image_size)

    @cached_property
    def caption(self) -> tuple[str, list[dict[str, Any]]]:
        return caption(self.scene, self.rng(1))

    @cached_property
    def motion_caption(self) -> str:
        return motion_caption(self.scene, self.rng(2))

    @cached_property
    def text(self) -> str:
        text = self.caption[0]
        return f"{text} {self.motion_caption}" if self.with_motion else text

    @cached_property
    def qa(self) -> list[dict[str, Any]]:
        types = tuple(t for t in QUESTION_TYPES if t != "motion" or self.with_motion)
        return questions(self.scene, self.rng(3), types, self.config.qa_per_type)


def motion_trace(scene: Scene, config: WorldConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """float32 [ts_steps, 6]: the moving object's x, y (image units), velocity and acceleration (per second),
    sampled evenly over the clip; exact derivatives of the ease-in-out path, plus optional sensor noise."""
    motion, duration = scene.motion, config.video_frames / config.fps
    t = np.linspace(0.0, 1.0, config.ts_steps)
    x, y = motion.position(t)
    delta = np.subtract(motion.end, motion.start)
    speed = np.pi / (2.0 * duration) * np.sin(np.pi * t)
    accel = np.pi ** 2 / (2.0 * duration ** 2) * np.cos(np.pi * t)
    trace = np.stack([x, y, delta[0] * speed, delta[1] * speed, delta[0] * accel, delta[1] * accel], axis=1)
    if config.sensor_noise > 0:
        trace = trace + (rng or np.random.default_rng(0)).normal(0.0, config.sensor_noise, trace.shape)
    return trace.astype(np.float32)


def scene_row(scene: Scene, max_objects: int) -> dict[str, Any]:
    """The scene's attributes as one flat row (object slots by id). Background and voice are left out on purpose:
    in the Symile split they carry the two hidden bits, and the row must not leak them."""
    row: dict[str, Any] = {"n_objects": len(scene.objects), "mover": scene.obj(scene.motion.object_id).color,
                           "direction": scene.motion.direction}
    for k in range(1, max_objects + 1):
        obj = scene.objects[k - 1] if k <= len(scene.objects) else None
        for column in ("shape", "color", "size", "texture", "x", "y", "z"):
            value = getattr(obj, column) if obj else None
            row[f"obj{k}_{column}"] = round(value, 6) if isinstance(value, float) else value
    if scene.symile is not None:
        row["target"] = scene.symile["target"]
    return row


def _audio(ctx: Context) -> Any:

    return synthesize(ctx.text, Voice(**ctx.scene.voice))


def _video(ctx: Context) -> Any:

    size = ctx.config.video_size or ctx.config.image_size
    return Clip(render_video(ctx.scene, size, ctx.config.video_frames), ctx.config.fps)


# modality name -> producer(ctx). Adding a World modality is one entry here (plus its registry file).
PRODUCERS: dict[str, Callable[[Context], Any]] = {
    "image": lambda ctx: Image.fromarray(ctx.still.image),
    "depth": lambda ctx: ctx.still.depth,
    "segmentation": lambda ctx: ctx.still.segmentation,
    "text": lambda ctx: ctx.text,
    "qa": lambda ctx: ctx.qa,
    "audio": _audio,
    "video": _video,
    "timeseries": lambda ctx: motion_trace(ctx.scene, ctx.config, ctx.rng(4)),
    "tabular": lambda ctx: scene_row(ctx.scene, ctx.config.max_objects),
}


def parse_modalities(spec: str | Iterable[str]) -> tuple[str, ...]:
    """'image,text' or 'all' -> validated names in PRODUCERS order."""
    names = list(PRODUCERS) if spec == "all" else [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    unknown = [n for n in names if n not in PRODUCERS]
    if unknown or not names:
        raise ValueError(f"World cannot make {unknown or 'nothing'}; choose from {', '.join(PRODUCERS)} or 'all'")
    return tuple(n for n in PRODUCERS if n in names)


def make_sample(index: int, split: str = "train", seed: int = 0, config: WorldConfig = WorldConfig(),
                modalities: Iterable[str] = ("image", "text", "qa")) -> dict[str, Any]:
    """Sample `index` of `split`: `{"__key__", modality: value, ..., "json": scene graph}`, a pure function."""
    wanted = frozenset(parse_modalities(modalities if isinstance(modalities, str) else tuple(modalities)))
    scene = generate_scene(seed, split, index, config.scene_config())
    ctx = Context(scene, seed, config, wanted)
    sample: dict[str, Any] = {"__key__": f"{split}-{index:08d}"}
    for name in PRODUCERS:
        if name in wanted:
            sample[name] = PRODUCERS[name](ctx)
    meta = scene.as_dict()
    meta.update(seed=seed, relations=ctx.caption[1], motion_caption=ctx.motion_caption,
                timeseries_channels=list(TIMESERIES_CHANNELS))
    sample["json"] = meta
    return sample


def _encoded(index: int, split: str, seed: int, config: WorldConfig, modalities: tuple[str, ...]) -> dict[str, Any]:
    return encode_sample(make_sample(index, split, seed, config, modalities))


def write_world(out_dir: str | os.PathLike, n: int, split: str = "train", seed: int = 0,
                config: WorldConfig = WorldConfig(), modalities: Iterable[str] = ("image", "text", "qa"),
                shard_size: int = 1000, workers: int = 1, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write n samples of `split` as `{split}-NNNNNN.tar` shards plus `world-{split}.json` (config, counts, held-out
    combinations, shard hashes). Same arguments -> byte-identical files, whatever `workers` is. Existing shards of
    the split are an error (a shorter rerun would leave stale ones behind) unless `overwrite`."""
    names = parse_modalities(tuple(modalities))
    split_info(split)
    out = Path(out_dir)
    stale = sorted(out.glob(f"{split}-*.tar"))
    if stale and not overwrite:
        raise ValueError(f"{out} already holds {len(stale)} {split} shard(s); pass overwrite (--overwrite) to replace them")
    for path in stale:
        path.unlink()
    job = partial(_encoded, split=split, seed=seed, config=config, modalities=names)
    pool = None
    if workers > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(workers)
        records: Iterable[dict[str, Any]] = pool.imap(job, range(n), chunksize=4)
    else:
        records = map(job, range(n))
    counts: dict[str, int] = {}
    try:
        with ShardWriter(out, prefix=split, max_count=shard_size) as writer:
            for record in progress_bar(records, total=n, desc=f"world {split}", unit="sample", disable=not progress):
                writer.write(record)
                for ext in record:
                    if not ext.startswith("__"):
                        counts[ext] = counts.get(ext, 0) + 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    shards = sorted(out.glob(f"{split}-*.tar"))
    summary = {"split": split, "family": split_info(split)[0], "n": n, "seed": seed, "modalities": list(names),
               "config": asdict(config), "members": counts,
               "held_out_combos": sorted(map(list, held_out_combos(seed))) if split_info(split)[0] == "compositional"
               else [],
               "shards": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards}}
    (out / f"world-{split}.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary
