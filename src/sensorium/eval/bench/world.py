"""World-Bench: the harness's built-in suite, written by the Sensorium World generator in the community's file
formats (VLMEvalKit MCQ TSV with base64 images, MME-style yes/no pairs, open VQA, captions, retrieval, zero-shot
classification, and questions over time series, video and speech) from held-out scenes (seed 2025, World's test
stream; the project's models train on seed 0's train stream). Each task also gets the answers of the same
questions on World's training split, for the bias-exposing baselines. Same config, same bytes: the suite is
generated once into a cache folder keyed by its config and the code that writes it, with file hashes checked
on every use."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sensorium import modalities
from sensorium.core.errors import MissingDependency
from sensorium.core.progress import progress_bar
from sensorium.data.tts import espeak_binary
from sensorium.data.world import SHAPES, WorldConfig, generate_scene, make_sample
from sensorium.data.world.scene import split_info
from sensorium.eval.bench import world_questions
from sensorium.eval.bench.formats import LETTERS, write_rows
from sensorium.eval.bench.world_questions import BUILDERS

log = logging.getLogger(__name__)
VERSION = 1


@dataclass(frozen=True)
class WorldTask:
    """One World-Bench task: its file, kind, question builder, number of scenes and the media its rows carry."""

    name: str
    kind: str
    builder: str
    scenes: int
    min_objects: int = 1
    max_objects: int = 6
    media: tuple[str, ...] = ("image",)


TASKS: tuple[WorldTask, ...] = (
    WorldTask("image-mcq", "mcq", "image_mcq", 150),
    WorldTask("image-yesno", "yesno", "image_yesno", 160),
    WorldTask("image-vqa", "vqa", "image_vqa", 100),
    WorldTask("image-caption", "caption", "caption", 100),
    WorldTask("image-retrieval", "retrieval", "caption", 200, min_objects=2),
    WorldTask("shape-classification", "classification", "classification", 100, 1, 1),
    WorldTask("table-mcq", "mcq", "table_mcq", 100, media=()),
    WorldTask("timeseries-mcq", "mcq", "timeseries_mcq", 100, media=("timeseries",)),
    WorldTask("video-mcq", "mcq", "video_mcq", 100, media=("video",)),
    WorldTask("audio-mcq", "mcq", "audio_mcq", 60, 1, 1, media=("audio",)),
)


@dataclass(frozen=True)
class WorldBenchConfig:
    """Where the questions come from: held-out scenes (seed, split), the training scenes the baselines' priors
    are counted on, picture size, and a scale on every task's scene count."""

    seed: int = 2025
    split: str = "test"
    prior_seed: int = 0
    prior_split: str = "train"
    prior_scenes: int = 2000
    image_size: int = 64
    scale: float = 1.0
    tasks: tuple[str, ...] = tuple(t.name for t in TASKS)

    def key(self) -> str:
        """Hash of the config and of the code that writes the questions: a changed builder is a new suite."""
        code = [Path(m.__file__).read_bytes() for m in (world_questions, sys.modules[__name__])]
        h = hashlib.sha1(json.dumps([VERSION, asdict(self)], sort_keys=True).encode())
        for c in code:
            h.update(c)
        return h.hexdigest()[:10]


def _rng(seed: int, split: str, index: int, task: str) -> np.random.Generator:
    salt = int(hashlib.sha1(task.encode()).hexdigest()[:8], 16)
    return np.random.default_rng([seed, split_info(split)[1], index, salt])


def _world(task: WorldTask, config: WorldBenchConfig) -> WorldConfig:
    return WorldConfig(image_size=config.image_size, min_objects=task.min_objects, max_objects=task.max_objects)


def _rows(task: WorldTask, seed: int, split: str, n: int, config: WorldBenchConfig) -> list[tuple[int, dict]]:
    world = _world(task, config)
    out = []
    for i in range(n):
        scene = generate_scene(seed, split, i, world.scene_config())
        out += [(i, row) for row in BUILDERS[task.builder](scene, _rng(seed, split, i, task.name))]
    return out


def _encoded(modality: str, value: Any) -> tuple[str, bytes]:
    return modalities.get(modality).encode(value)


def write_task(task: WorldTask, folder: Path, config: WorldBenchConfig, progress: bool = True) -> dict[str, Any]:
    """Write one task's file (and media files) into `folder`, plus its training answers; returns its manifest
    entry."""
    n = max(1, round(task.scenes * config.scale))
    rows = _rows(task, config.seed, config.split, n, config)
    world = _world(task, config)
    media_cols = [m for m in task.media if m != "image"]
    out_rows: list[dict[str, Any]] = []
    first_row: dict[int, int] = {}  # scene -> index of the row holding its picture (VLMEvalKit reuses it)
    for k, (scene_index, row) in enumerate(progress_bar(rows, desc=task.name, unit="q", disable=not progress)):
        rec: dict[str, Any] = {"index": k}
        wanted = tuple(row.get("media") or task.media)
        sample = make_sample(scene_index, config.split, config.seed, world, wanted) if wanted else {}
        if "image" in wanted:
            if scene_index in first_row and task.kind == "yesno":
                rec["image"] = str(first_row[scene_index])
            else:
                rec["image"] = base64.b64encode(_encoded("image", sample["image"])[1]).decode()
                first_row[scene_index] = k
        for m in media_cols:
            if m in wanted:
                ext, data = _encoded(m, sample[m])
                rel = f"media/{task.name}/{k:05d}.{ext}"
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(data)
                rec[f"{m}_path"] = rel
        if row.get("hint"):
            rec["hint"] = row["hint"]
        if task.kind in ("caption", "retrieval"):
            rec["captions"] = [row["answer"]]
        elif task.kind == "classification":
            rec["label"] = row["answer"]
        else:
            rec["question"] = row["question"]
            if row.get("options"):
                letters = LETTERS[:len(row["options"])]
                rec.update(dict(zip(letters, row["options"])))
                rec["answer"] = letters[row["options"].index(row["answer"])]
            else:
                rec["answer"] = row["answer"]
        rec.update({"category": row["category"], "l2-category": row.get("l2", ""), "split": "world-bench"})
        out_rows.append(rec)
    suffix = ".jsonl" if task.kind in ("caption", "retrieval") else ".tsv"
    columns = None
    if suffix == ".tsv":
        columns = ["index", *(["image"] if "image" in task.media else []), *(f"{m}_path" for m in media_cols),
                   "hint", "question", *LETTERS[:max((len(r.get("options") or []) for _, r in rows), default=0)],
                   "answer", "label", "category", "l2-category", "split"]
        columns = [c for c in columns if any(c in r for r in out_rows)]
    path = write_rows(folder / f"{task.name}{suffix}", out_rows, columns)
    priors = [{"category": r["category"], "question": r.get("question", ""), "answer": r["answer"]}
              for _, r in _rows(task, config.prior_seed, config.prior_split, config.prior_scenes, config)]
    prior_path = write_rows(folder / f"{task.name}.priors.jsonl", priors)
    entry = {"name": task.name, "file": path.name, "kind": task.kind, "priors": prior_path.name, "scenes": n,
             "items": len(out_rows)}
    if task.kind == "classification":
        entry["classes"] = list(SHAPES)
    return entry


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "bench.json"}


def _espeak() -> bool:
    try:
        espeak_binary()
        return True
    except MissingDependency:
        return False


def build(cache: str | Path = "data/bench", config: WorldBenchConfig = WorldBenchConfig(),
          progress: bool = True) -> Path:
    """World-Bench's manifest (cache/world-bench-v1-<key>/bench.json), generated on first use; a folder whose files
    no longer match their recorded hashes is generated again (never used as it is)."""
    folder = Path(cache) / f"world-bench-v{VERSION}-{config.key()}"
    manifest = folder / "bench.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        if recorded.get("files") == _hashes(folder):
            return manifest
        log.warning("%s: files differ from their recorded hashes; generating World-Bench again", folder)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    entries, missing = [], []
    for task in TASKS:
        if task.name not in config.tasks:
            continue
        if "audio" in task.media and not _espeak():
            missing.append(f"{task.name} (needs espeak-ng for speech)")
            continue
        entries.append(write_task(task, tmp, config, progress))
    body = {"name": "world-bench", "version": VERSION, "config": asdict(config), "tasks": entries,
            "left_out": missing, "files": _hashes(tmp)}
    (tmp / "bench.json").write_text(json.dumps(body, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return manifest
