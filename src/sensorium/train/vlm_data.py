"""Data for the language decoder: samples (Sensorium World scenes generated in memory, or image-text shards such
as openclipart) -> conversations (captioning, or multi-turn Sort-of-CLEVR QA) -> tokenized rows with masked
labels -> seeded mini-batches whose media are tower inputs or cached frozen-tower tokens."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sensorium.core.config import checked, from_dict
from sensorium.core.files import CheckpointError, read_safetensors, save_safetensors
from sensorium.core.progress import progress_bar
from sensorium.data.features import weights_digest
from sensorium.data.shards import SkipLog, iter_samples
from sensorium.data.world import WorldConfig, make_sample
from sensorium.encoders.base import Tower
from sensorium.models.template import IGNORE, ChatTokenizer, Encoded, pad_rows, placeholder
from sensorium.models.vlm import TowerTokens

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Where samples come from and which task they become."""

    source: str = checked("world", choices=("world", "shards"))  # world (generated in memory) | shards (a folder)
    path: str = ""  # shards: the folder
    task: str = checked("vqa", choices=("vqa", "caption"))  # vqa (multi-turn QA, world only) | caption
    n_train: int = checked(2000, min=0)  # world: scenes; shards: at most this many samples (0 = all)
    n_val: int = checked(300, min=0)
    world: dict[str, Any] = field(default_factory=dict)  # WorldConfig fields (image_size, qa_per_type, ...)
    turns: int = checked(6, min=1)  # vqa: question-answer turns per conversation
    prompt: str = "Describe the picture."  # caption: the user's request
    workers: int = checked(1, min=1)  # world generation processes
    cache_dir: str = ""  # world: keep generated splits here (safetensors + JSON), shared by runs of one recipe

    def validate(self) -> None:
        """Called by the config loader: `world` holds WorldConfig fields; shards need a path."""
        from_dict(WorldConfig, self.world, "world")
        if self.source == "shards" and not self.path:
            raise ValueError("source: shards needs path: the folder holding train/ and val/ shards")


@dataclass
class Samples:
    """One split: images (uint8 [N, 3, S, S] tensor or a list of PIL images), captions, QA lists, keys."""

    images: Any
    captions: list[str]
    qa: list[list[dict[str, Any]]]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)


def _world_item(index: int, split: str, seed: int, config: Any) -> tuple[np.ndarray, str, list[dict[str, Any]], str]:

    s = make_sample(index, split, seed, config, ("image", "text", "qa"))
    return np.asarray(s["image"], dtype=np.uint8), s["text"], s["qa"], s["__key__"]


def world_samples(n: int, split: str, seed: int, world: dict[str, Any], workers: int = 1) -> Samples:
    """n World scenes of `split` (image, caption, QA), generated in memory; identical for any `workers`."""
    job = partial(_world_item, split=split, seed=seed, config=from_dict(WorldConfig, world, "world"))
    if workers > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            items = pool.map(job, range(n), chunksize=max(1, n // (8 * workers)))
    else:
        items = [job(i) for i in range(n)]
    images = torch.from_numpy(np.stack([it[0] for it in items])).permute(0, 3, 1, 2).contiguous()
    return Samples(images, [it[1] for it in items], [it[2] for it in items], [it[3] for it in items])


def cached_world_samples(folder: Path, n: int, split: str, seed: int, world: dict[str, Any],
                         workers: int = 1) -> Samples:
    """`world_samples`, generated once per (n, split, seed, world config) and kept in `folder` (images as
    safetensors, text and QA as JSON, written atomically), so several runs of one recipe share the generation."""

    key = hashlib.sha1(json.dumps([n, split, seed, world], sort_keys=True).encode()).hexdigest()[:12]
    base = folder / f"world-{split}-{n}-{key}"
    images, meta = base.with_suffix(".safetensors"), base.with_suffix(".json")
    if images.is_file() and meta.is_file():
        try:
            data = json.loads(meta.read_text())
            cached = Samples(load_file(str(images))["images"], data["captions"], data["qa"], data["keys"])
            if len(cached) == n and cached.images.shape[0] == n:
                return cached
            log.warning("%s: holds %d scenes, expected %d; generating them again", images, len(cached), n)
        except Exception as err:  # noqa: BLE001 - a damaged cache is regenerated, never trusted
            log.warning("%s: unreadable World cache (%s: %s); generating it again", images, type(err).__name__, err)
    samples = world_samples(n, split, seed, world, workers)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = base.with_name(base.name + f".{os.getpid()}.tmp")
    save_file({"images": samples.images}, str(tmp))
    os.replace(tmp, images)
    tmp.write_text(json.dumps({"captions": samples.captions, "qa": samples.qa, "keys": samples.keys}))
    os.replace(tmp, meta)
    return samples


def images_digest(images: Any) -> str:
    """SHA-256 of a split's images (a uint8 tensor, or PIL images' pixels), so cached tower tokens are keyed by
    the pictures they came from, not by where they were read."""
    h = hashlib.sha256()
    if isinstance(images, torch.Tensor):
        h.update(str(tuple(images.shape)).encode())
        h.update(images.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        for image in images:
            h.update(f"{getattr(image, 'mode', '')}{getattr(image, 'size', '')}".encode())
            h.update(image.tobytes() if hasattr(image, "tobytes") else repr(image).encode())
    return h.hexdigest()[:16]


def shard_samples(path: str | Path, limit: int = 0) -> Samples:
    """Image + caption samples from WebDataset shards (corrupt members are counted skips, logged)."""
    skips = SkipLog()
    images, captions, keys = [], [], []
    for sample in iter_samples(path, want={"image", "text"}, skips=skips):
        if "image" not in sample or not sample.get("text"):
            continue
        images.append(sample["image"])
        captions.append(sample["text"])
        keys.append(sample["__key__"])
        if limit and len(keys) >= limit:
            break
    if not keys:
        raise ValueError(f"{path}: no sample with both an image and a caption")
    if skips.total:
        log.warning("%s: %d member(s) skipped: %s", path, skips.total, dict(skips.counts))
    return Samples(images, captions, [[] for _ in keys], keys)


def load_samples(cfg: DataConfig, split: str, seed: int) -> Samples:
    """The samples of `split` ('train', 'val' or 'test': n_val of them) for a data config."""
    n = cfg.n_train if split == "train" else cfg.n_val
    if cfg.source == "world":
        if cfg.cache_dir:
            return cached_world_samples(Path(cfg.cache_dir), n, split, seed, cfg.world, cfg.workers)
        return world_samples(n, split, seed, cfg.world, cfg.workers)
    if cfg.source == "shards":
        folder = Path(cfg.path) / split
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: split not found (build the data first, e.g. sensorium data build "
                                    "clipart)")
        return shard_samples(folder, n)
    raise ValueError(f"unknown data source {cfg.source!r} (world | shards)")


def conversations(samples: Samples, cfg: DataConfig, seed: int) -> tuple[list[list[dict[str, str]]], list[int]]:
    """Conversations and, for each, the index of its image: one caption request per sample, or the sample's
    questions shuffled (seeded) into conversations of `turns` question-answer pairs."""
    image = placeholder("image")
    convs, rows = [], []
    for i in range(len(samples)):
        if cfg.task == "caption":
            convs.append([{"role": "user", "content": f"{image}\n{cfg.prompt}"},
                          {"role": "assistant", "content": samples.captions[i]}])
            rows.append(i)
            continue
        if cfg.task != "vqa":
            raise ValueError(f"unknown task {cfg.task!r} (vqa | caption)")
        qa = list(samples.qa[i])
        order = np.random.default_rng([seed, i]).permutation(len(qa))
        for start in range(0, len(qa), cfg.turns):
            conv = []
            for k, j in enumerate(order[start:start + cfg.turns]):
                q = qa[int(j)]
                conv.append({"role": "user", "content": f"{image}\n{q['question']}" if k == 0 else q["question"]})
                conv.append({"role": "assistant", "content": q["answer"]})
            convs.append(conv)
            rows.append(i)
    return convs, rows


def corpus(samples: Samples, cfg: DataConfig) -> list[str]:
    """The texts a tokenizer for this data should learn (captions, questions, answers, the prompt)."""
    texts = [cfg.prompt] if cfg.task == "caption" else []
    texts += samples.captions if cfg.task == "caption" else []
    texts += [part for qa in samples.qa for q in qa for part in (q["question"], q["answer"])]
    return texts


class MediaStore:
    """Tower inputs for the images of a split: a uint8 tensor sliced per batch, PIL images prepared per batch,
    or - for a frozen tower with weights - its tokens computed once (optionally cached on disk)."""

    def __init__(self, images: Any, tower: Tower, frozen: bool, cache_dir: Path | None = None, tag: str = "",
                 batch_size: int = 64, device: str | torch.device = "cpu"):
        self.tower, self.images, self.tokens = tower, images, None
        if frozen and any(p.numel() for p in tower.parameters()):
            self.tokens = self._encode(images, batch_size, device, cache_dir, tag)

    def _encode(self, images: Any, batch_size: int, device: Any, cache_dir: Path | None, tag: str) -> TowerTokens:
        path = None
        if cache_dir is not None:
            key = hashlib.sha1(json.dumps([tag, self.tower.describe(), getattr(self.tower, "token_grid", None),
                                           images_digest(images), weights_digest(self.tower)],
                                          sort_keys=True, default=str).encode()).hexdigest()[:16]
            path = cache_dir / f"tokens-{self.tower.name}-{key}.safetensors"
            if path.is_file():
                try:
                    data = read_safetensors(path)
                    if data["tokens"].shape[0] == len(images):
                        return TowerTokens(data["tokens"], data["mask"].bool())
                    log.warning("%s: %d rows for %d images; encoding them again", path, data["tokens"].shape[0],
                                len(images))
                except (CheckpointError, KeyError) as exc:
                    log.warning("%s is damaged (%s); encoding the images again", path, exc)
        self.tower.eval().to(device)
        chunks, masks = [], []
        for start in progress_bar(range(0, len(images), batch_size), desc=f"{self.tower.name} tokens", unit="batch"):
            with torch.inference_mode():
                inputs = self.tower.prepare(images[start:start + batch_size])
                tok, mask = self.tower.tokens(inputs.to(device) if isinstance(inputs, torch.Tensor) else inputs)
            chunks.append(tok.to(torch.float16).cpu())
            masks.append(mask.cpu())
        tokens = TowerTokens(torch.cat(chunks), torch.cat(masks))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_safetensors({"tokens": tokens.tokens.contiguous(), "mask": tokens.mask.to(torch.uint8)}, path)
        return tokens

    def to(self, device: str | torch.device) -> "MediaStore":
        """Keep tensors on `device` (e.g. all World images on the GPU)."""
        if self.tokens is not None:
            self.tokens = self.tokens.to(device)
        elif isinstance(self.images, torch.Tensor):
            self.images = self.images.to(device)
        return self

    def take(self, index: Sequence[int] | torch.Tensor) -> Any:
        """Tower inputs (or TowerTokens) for the items `index`, in order."""
        if self.tokens is not None:
            idx = torch.as_tensor(index, device=self.tokens.tokens.device)
            return TowerTokens(self.tokens.tokens[idx], self.tokens.mask[idx])
        if isinstance(self.images, torch.Tensor):
            return self.tower.prepare(self.images[torch.as_tensor(index, device=self.images.device)])
        return self.tower.prepare([self.images[int(i)] for i in index])


class Rows:
    """Tokenized conversations (ids, labels) with the image row of each, and seeded batches over them."""

    def __init__(self, encoded: list[Encoded], image_rows: list[int], pad_id: int):
        for i, e in enumerate(encoded):
            if e.media != ["image"]:
                raise ValueError(f"conversation {i}: {e.media.count('image')} <image> placeholder(s) but 1 image; "
                                 "each conversation here has exactly one image")
        self.ids, self.padding = pad_rows([e.ids for e in encoded], pad_id)
        self.labels = pad_rows([e.labels for e in encoded], IGNORE)[0]
        self.lengths = self.padding.sum(1)
        self.image_rows = torch.as_tensor(image_rows)
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.image_rows)

    def batch(self, index: torch.Tensor, media: MediaStore, device: Any) -> dict[str, Any]:
        """Rows `index` trimmed to their longest member, on `device`, with their images' tower inputs."""
        length = int(self.lengths[index].max())
        return {"ids": self.ids[index, :length].to(device, non_blocking=True),
                "padding": self.padding[index, :length].to(device, non_blocking=True),
                "labels": self.labels[index, :length].to(device, non_blocking=True),
                "media": {"image": media.take(self.image_rows[index])}}

    def batches(self, batch_size: int, media: MediaStore, seed: int, device: Any):
        """`batches(step)` -> an iterator of batches from `step` on; epoch-wise permutations seeded by (seed,
        epoch), so a resumed run sees exactly the batches it would have seen."""
        size = min(batch_size, len(self))
        per_epoch = max(1, len(self) // size)

        def iterate(step: int) -> Iterator[dict[str, Any]]:
            while True:
                epoch, k = divmod(step, per_epoch)
                order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
                yield self.batch(order[k * size:(k + 1) * size], media, device)
                step += 1

        return iterate


def tokenize(tokenizer: ChatTokenizer, convs: list[list[dict[str, str]]], image_rows: list[int]) -> Rows:
    """Conversations -> Rows (the template is checked on the first conversation)."""
    return Rows(tokenizer.encode_batch(convs), image_rows, tokenizer.pad_id)


__all__ = ["DataConfig", "MediaStore", "Rows", "Samples", "cached_world_samples", "conversations", "corpus",
           "load_samples", "shard_samples", "tokenize", "world_samples"]
