"""Evaluation of a unified encoder on an in-memory set: retrieval for every ordered pair of modalities (with the
chance level of the same galleries) and zero-shot classification of images from text prompts."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from sensorium.data.memory import MemorySet
from sensorium.models.unified import UnifiedModel


@torch.no_grad()
def embed_set(model: UnifiedModel, data: MemorySet, modalities: Sequence[str], batch_size: int = 128
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Embeddings [N, E] of every sample for each modality, and the present masks [N]."""
    model.eval()
    emb: dict[str, list[torch.Tensor]] = {m: [] for m in modalities}
    present: dict[str, list[torch.Tensor]] = {m: [] for m in modalities}
    for batch in data.in_order(batch_size):
        out = model(batch, modalities=list(modalities))
        for m in modalities:
            emb[m].append(out[m].float().cpu())
            present[m].append(batch["present"][m].cpu())
    return {m: torch.cat(v) for m, v in emb.items()}, {m: torch.cat(v) for m, v in present.items()}


@torch.no_grad()
def zero_shot(model: UnifiedModel, image_emb: torch.Tensor, labels: Sequence[str], prompts: dict[str, list[str]],
              text_modality: str = "text", batch_size: int = 256) -> dict[str, Any]:
    """Classify images from text prompts alone, two ways: `accuracy` by the nearest class centroid (the mean of the
    class's prompt embeddings: CLIP's prompt ensembling) and `nearest_prompt_accuracy` by the class of the single
    nearest prompt (which can match the image's other attributes, e.g. its colour, before deciding the class)."""
    classes = list(prompts)
    embedded = []
    for name in classes:
        texts = prompts[name]
        embedded.append(torch.cat([model.encode(text_modality, texts[i:i + batch_size]).float()
                                   for i in range(0, len(texts), batch_size)]))
    centroids = torch.stack([F.normalize(e.mean(0), dim=-1) for e in embedded])
    by_centroid = (image_emb @ centroids.T).argmax(1)
    by_prompt = torch.stack([(image_emb @ e.T).max(1).values for e in embedded], dim=1).argmax(1)
    truth = torch.tensor([classes.index(t) for t in labels])
    per_class = {c: round(100 * (by_centroid[truth == k] == k).float().mean().item(), 2)
                 for k, c in enumerate(classes) if (truth == k).any()}
    return {"accuracy": round(100 * (by_centroid == truth).float().mean().item(), 2),
            "nearest_prompt_accuracy": round(100 * (by_prompt == truth).float().mean().item(), 2),
            "chance": round(100 / len(classes), 2), "n": len(labels), "per_class": per_class}
