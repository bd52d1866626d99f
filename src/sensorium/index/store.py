"""A persistent vector index of any files in the shared space: embeddings (safetensors) + items (JSONL).
Search embeds a query of any modality and returns the top-k items by cosine similarity."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from safetensors.torch import load_file, save_file

from sensorium import modalities
from sensorium.core.progress import progress_bar
from sensorium.data.shards import SkipLog
from sensorium.interop import build_tower
from sensorium.models.aligned import AlignedModel


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


@dataclass
class Hit:
    score: float
    item: dict[str, Any]


class VectorIndex:
    """Normalised embeddings [N, D] with one JSON record per item (path, modality, preview text)."""

    def __init__(self, embeddings: torch.Tensor, items: list[dict[str, Any]]):
        self.embeddings, self.items = embeddings, items

    @classmethod
    def build(cls, model: AlignedModel, paths: Sequence[str | Path], batch_size: int = 64, strict: bool = False,
              progress: bool = True) -> tuple["VectorIndex", dict[str, Any]]:
        """Embed every file whose extension a modality with a head claims; others are counted as skipped."""
        skips = SkipLog(strict=strict)
        by_modality: dict[str, list[tuple[Path, Any]]] = {}
        for path in progress_bar(_files(paths), desc="reading", disable=not progress, unit="file"):
            modality = modalities.for_extension(path.suffix.lstrip("."))
            if modality is None or modality.name not in model.heads:
                skips.skip("unsupported", str(path), "no modality with a trained head reads this extension")
                continue
            try:
                by_modality.setdefault(modality.name, []).append((path, modality.decode(path.read_bytes(), path.suffix.lstrip(".").lower())))
            except modalities.DecodeError as exc:
                skips.skip(f"corrupt_{modality.name}", str(path), str(exc))
        embs, items = [], []
        for name, rows in by_modality.items():
            tower = build_tower(model.config.towers[name])
            with torch.no_grad():
                embs.append(model.embed(name, tower.encode([v for _, v in rows], batch_size=batch_size)))
            items += [{"path": str(p), "modality": name, "text": v if isinstance(v, str) else None} for p, v in rows]
        if not items:
            raise ValueError("nothing to index: no readable files of a modality the model knows")
        return cls(torch.cat(embs), items), skips.as_dict()

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self.embeddings.contiguous()}, str(directory / "embeddings.safetensors"))
        (directory / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in self.items))

    @classmethod
    def load(cls, directory: str | Path) -> "VectorIndex":
        directory = Path(directory)
        if not (directory / "embeddings.safetensors").exists():
            raise FileNotFoundError(f"{directory}: no index here; build one with `sensorium index RUN PATHS...`")
        items = [json.loads(line) for line in (directory / "items.jsonl").read_text().splitlines() if line]
        return cls(load_file(str(directory / "embeddings.safetensors"))["embeddings"], items)

    def search(self, query: torch.Tensor, k: int = 10, modality: str | None = None) -> list[Hit]:
        """Top-k items (optionally of one modality) for a normalised query embedding."""
        scores = self.embeddings @ query
        if modality is not None:
            mask = torch.tensor([i["modality"] == modality for i in self.items])
            scores = scores.masked_fill(~mask, float("-inf"))
        top = scores.topk(min(k, len(self.items)))
        return [Hit(round(s, 4), self.items[i]) for s, i in zip(top.values.tolist(), top.indices.tolist())
                if s != float("-inf")]


def embed_query(model: AlignedModel, modality: str, value: Any) -> torch.Tensor:
    """One query value (str, image, waveform) -> its shared-space embedding."""
    tower = build_tower(model.config.towers[modality])
    with torch.no_grad():
        return model.embed(modality, tower.encode([value]))[0]
