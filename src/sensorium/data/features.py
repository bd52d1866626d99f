"""Frozen-tower features, computed once per (shards, modality, tower) and cached on disk as safetensors, so
training a projection or adding a modality never re-runs the towers on data already seen. The cache is keyed by
content: the SHA-256 of the shards' bytes and of the tower's weights, never by paths or time stamps."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from sensorium.core.files import (
    CheckpointError,
    file_digest,
    read_json,
    read_safetensors,
    save_safetensors,
    write_text_atomic,
)
from sensorium.core.progress import progress_bar
from sensorium.data.shards import SkipLog, count_missing, count_samples, expand_shards, iter_samples
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


def shards_digest(shards: list[Path]) -> str:
    """What a feature cache is keyed by: the SHA-256 of every shard's bytes (and its file name, which sample keys
    carry), in order. A shard replaced by another of the same size and time stamp gets a new key."""
    h = hashlib.sha256()
    for shard in shards:
        h.update(f"{shard.name}:{file_digest(shard)}\n".encode())
    return h.hexdigest()[:16]


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes, bytes), computed once per module."""
    cached = getattr(module, "_sensorium_weights_digest", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = h.hexdigest()[:16]
    object.__setattr__(module, "_sensorium_weights_digest", digest)
    return digest


def tower_id(tower: Tower) -> str:
    """What a cached feature is keyed by on the model side: the tower's name and config and its weights' hash."""
    described = json.dumps(tower.describe(), sort_keys=True, default=str)
    return hashlib.sha256(f"{described}:{weights_digest(tower)}".encode()).hexdigest()[:10]


def _read_cached(paths: dict[str, Path], index_path: Path) -> FeatureSet | str:
    """The cached FeatureSet, or why the cache cannot be used (missing, truncated, corrupt, inconsistent)."""
    try:
        index = read_json(index_path)
        keys, texts = index["keys"], index["texts"]
        features, present = {}, {}
        for modality, path in paths.items():
            data = read_safetensors(path)
            if data["features"].shape[0] != len(keys) or data["present"].shape[0] != len(keys):
                return f"{path}: {data['features'].shape[0]} rows for {len(keys)} samples"
            features[modality], present[modality] = data["features"], data["present"].bool()
    except (CheckpointError, FileNotFoundError, KeyError, TypeError) as exc:
        return str(exc)
    return FeatureSet(keys, features, present, texts, index.get("skips", {}))


def cached_features(spec: Any, towers: dict[str, Tower], cache_dir: str | Path, *, device: str = "cpu",
                    batch_size: int = 64, strict: bool = False, progress: bool = True) -> FeatureSet:
    """Features of every sample in `spec` for each modality in `towers`, loaded from `cache_dir` when shards with
    the same bytes were already encoded by the same tower (name, config and weights). A damaged cache entry is
    recomputed with a warning. Samples are aligned across modalities by key."""
    shards = expand_shards(spec)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    base = shards_digest(shards)
    index_path = cache / f"{base}-index.json"
    paths = {m: cache / f"{base}-{m}-{t.name}-{tower_id(t)}.safetensors" for m, t in towers.items()}
    missing = [m for m, p in paths.items() if not p.exists()] if index_path.exists() else list(towers)
    if missing:
        _encode_into(shards, {m: towers[m] for m in missing}, paths, index_path, device, batch_size, strict, progress)
    found = _read_cached(paths, index_path)
    if isinstance(found, str):
        log.warning("feature cache in %s is damaged (%s); recomputing it", cache, found)
        _encode_into(shards, towers, paths, index_path, device, batch_size, strict, progress)
        found = _read_cached(paths, index_path)
        if isinstance(found, str):
            raise CheckpointError(f"feature cache in {cache} cannot be written and read back ({found})")
    if strict and found.skips.get("total"):
        raise DecodeError(found.skips["examples"][0])  # cached from an earlier non-strict pass over the same shards
    return found


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
    lacking: dict[str, list[str]] = {m: [] for m in towers}
    for sample in iter_samples(shards, want=want, skips=skips):
        i = len(keys)
        keys.append(f"{Path(sample['__shard__']).name}:{sample['__key__']}")
        texts.append(sample.get("text"))
        for modality in towers:
            if modality in sample:
                pending[modality].append((i, sample[modality]))
                if len(pending[modality]) >= batch_size:
                    flush(modality)
            else:
                lacking[modality].append(f"{sample['__shard__']}:{sample['__key__']}")
        bar.update(1)
    bar.close()
    if not keys:
        raise ValueError(f"{shards[0]}...: no samples could be read from {len(shards)} shard(s)")
    count_missing(lacking, len(keys), skips)
    for modality, tower in towers.items():
        flush(modality)
        feats = torch.zeros(len(keys), tower.dim)
        present = torch.zeros(len(keys), dtype=torch.uint8)
        for rows, chunk in chunks[modality]:
            feats[rows] = chunk
            present[rows] = 1
        save_safetensors({"features": feats.contiguous(), "present": present}, paths[modality],
                         metadata={"tower": json.dumps(tower.describe(), default=str), "n": str(len(keys)),
                                   "weights_sha256": weights_digest(tower)})
    write_text_atomic(index_path, json.dumps({"keys": keys, "texts": texts, "skips": skips.as_dict(),
                                              "shards": [{"name": s.name, "path": str(s)} for s in shards]}))
    if skips.total:
        log.warning("%d sample(s) with skipped members while encoding: %s", skips.total, dict(skips.counts))
