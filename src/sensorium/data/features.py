"""Frozen-tower features, computed once per (shards, modality, tower) and cached on disk as safetensors, so
training a projection or adding a modality never re-runs the towers on data already seen."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file

from sensorium.core.progress import progress_bar
from sensorium.data.shards import SkipLog, count_samples, expand_shards, iter_samples
from sensorium.encoders.base import Tower
from sensorium.modalities import DecodeError

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Features of N samples: `features[modality]` is [N, D] (zeros where absent), `present[modality]` is [N]
    bool, `keys` identify samples and `texts` keep the captions (for grouping duplicates and display)."""

    keys: list[str]
    features: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    texts: list[str | None] = field(default_factory=list)
    skips: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    def subset(self, index: torch.Tensor | Sequence[int]) -> "FeatureSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return FeatureSet([self.keys[i] for i in index.tolist()],
                          {m: f[index] for m, f in self.features.items()},
                          {m: p[index] for m, p in self.present.items()},
                          [self.texts[i] for i in index.tolist()] if self.texts else [], self.skips)

    def groups(self) -> torch.Tensor:
        """Group id per sample: samples with identical text are interchangeable targets in retrieval."""
        if not self.texts:
            return torch.arange(len(self))
        ids: dict[str, int] = {}
        return torch.tensor([ids.setdefault(t if t is not None else f"\0{i}", len(ids))
                             for i, t in enumerate(self.texts)])


def feature_cache_dir(data: str | Path, cache_dir: str | Path = "") -> Path:
    """Where a recipe's tower features are cached: `cache_dir`, or `<data>/.features` (shared by every run on the
    same data, keyed inside by shards and tower)."""
    return Path(cache_dir) if cache_dir else Path(data) / ".features"


def _fingerprint(shards: list[Path]) -> str:
    h = hashlib.sha1()
    for shard in shards:
        stat = shard.stat()
        h.update(f"{shard.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _tower_id(tower: Tower) -> str:
    return hashlib.sha1(json.dumps(tower.describe(), sort_keys=True, default=str).encode()).hexdigest()[:10]


def cached_features(spec: Any, towers: dict[str, Tower], cache_dir: str | Path, *, device: str = "cpu",
                    batch_size: int = 64, strict: bool = False, progress: bool = True) -> FeatureSet:
    """Features of every sample in `spec` for each modality in `towers`, loaded from `cache_dir` when the same
    shards were already encoded by the same tower. Samples are aligned across modalities by key."""
    shards = expand_shards(spec)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    base = _fingerprint(shards)
    index_path = cache / f"{base}-index.json"
    paths = {m: cache / f"{base}-{m}-{t.name}-{_tower_id(t)}.safetensors" for m, t in towers.items()}
    missing = [m for m, p in paths.items() if not p.exists()] if index_path.exists() else list(towers)
    if missing:
        _encode_into(shards, {m: towers[m] for m in missing}, paths, index_path, device, batch_size, strict, progress)
    index = json.loads(index_path.read_text())
    if strict and index.get("skips", {}).get("total"):
        raise DecodeError(index["skips"]["examples"][0])  # cached from an earlier non-strict pass over the same shards
    keys, texts = index["keys"], index["texts"]
    features, present = {}, {}
    for modality, path in paths.items():
        data = load_file(str(path))
        features[modality], present[modality] = data["features"], data["present"].bool()
    return FeatureSet(keys, features, present, texts, index.get("skips", {}))


def _encode_into(shards: list[Path], towers: dict[str, Tower], paths: dict[str, Path], index_path: Path,
                 device: str, batch_size: int, strict: bool, progress: bool) -> None:
    skips = SkipLog(strict=strict)
    want = set(towers) | {"text"}
    keys: list[str] = []
    texts: list[str | None] = []
    pending: dict[str, list[tuple[int, Any]]] = {m: [] for m in towers}
    chunks: dict[str, list[tuple[list[int], torch.Tensor]]] = {m: [] for m in towers}
    for tower in towers.values():
        tower.eval().to(device)

    def flush(modality: str) -> None:
        rows = pending[modality]
        if rows:
            feats = towers[modality].encode([v for _, v in rows], batch_size=batch_size, device=device)
            chunks[modality].append(([i for i, _ in rows], feats))
            pending[modality] = []

    bar = progress_bar(total=count_samples(shards) if progress else None, desc=f"features ({', '.join(towers)})",
                       unit="sample", disable=not progress)
    for sample in iter_samples(shards, want=want, skips=skips):
        i = len(keys)
        keys.append(f"{Path(sample['__shard__']).name}:{sample['__key__']}")
        texts.append(sample.get("text"))
        for modality in towers:
            if modality in sample:
                pending[modality].append((i, sample[modality]))
                if len(pending[modality]) >= batch_size:
                    flush(modality)
        bar.update(1)
    bar.close()
    if not keys:
        raise ValueError(f"{shards[0]}...: no samples could be read from {len(shards)} shard(s)")
    for modality, tower in towers.items():
        flush(modality)
        feats = torch.zeros(len(keys), tower.dim)
        present = torch.zeros(len(keys), dtype=torch.uint8)
        for rows, chunk in chunks[modality]:
            feats[rows] = chunk
            present[rows] = 1
        save_file({"features": feats.contiguous(), "present": present}, str(paths[modality]),
                  metadata={"tower": json.dumps(tower.describe(), default=str), "n": str(len(keys))})
    index_path.write_text(json.dumps({"keys": keys, "texts": texts, "skips": skips.as_dict(),
                                      "shards": [str(s) for s in shards]}))
    if skips.total:
        log.warning("%d sample member(s) skipped while encoding: %s", skips.total, dict(skips.counts))
