"""Embedding models behind one interface: `modalities`, `dim`, and `embed(modality, items)` returning
L2-normalised float32 vectors on the CPU, batched and without gradients. The composer's aligned heads, a dual
encoder (HF CLIP / SigLIP, open_clip, `sensorium train clip` runs) and a unified encoder all answer it, so the
Python API, the CLI, the index, the server and the benchmark harness never ask which one they hold."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from sensorium.data.loader import collate
from sensorium.encoders.base import Tower, to_device
from sensorium.inference.items import to_values
from sensorium.interop import Pretrained
from sensorium.models.aligned import AlignedModel
from sensorium.models.dual_encoder import DualEncoder
from sensorium.models.unified import UnifiedModel


class Embedder:
    """Items of any supported modality -> one shared embedding space."""

    kind = "embedder"

    def __init__(self, name: str, device: str | torch.device = "cpu"):
        self.name, self.device = name, torch.device(device)

    @property
    def modalities(self) -> list[str]:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def _embed_values(self, modality: str, values: list[Any]) -> torch.Tensor:
        """Decoded values of one modality -> embeddings [N, dim] (any dtype or device)."""
        raise NotImplementedError

    def check_modality(self, modality: str) -> None:
        """A ValueError naming the modalities this model embeds, when `modality` is not one of them."""
        if modality not in self.modalities:
            raise ValueError(f"{self.name} embeds {', '.join(self.modalities)}, not {modality!r}")

    @torch.inference_mode()
    def embed(self, modality: str, items: Sequence[Any] | Any, batch_size: int = 64) -> torch.Tensor:
        """File paths, bytes, data URIs, PIL images, arrays or strings of `modality` -> L2-normalised [N, dim]
        float32 on the CPU. A single item is a batch of one; a bad item is an error naming its index."""
        self.check_modality(modality)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        values = to_values(modality, items)
        out = [self._embed_values(modality, values[i:i + batch_size]).float() for i in range(0, len(values), batch_size)]
        return F.normalize(torch.cat(out), dim=-1).cpu()

    def describe(self) -> dict[str, Any]:
        """What the server's /v1/models and `sensorium.list_models()` say about this model."""
        return {"name": self.name, "kind": self.kind, "modalities": self.modalities, "dim": self.dim}


class AlignedEmbedder(Embedder):
    """The composer's model: a frozen tower per modality, then its projection head into the shared space."""

    def __init__(self, model: AlignedModel, towers: dict[str, Tower], name: str = "aligned",
                 device: str | torch.device = "cpu"):
        super().__init__(name, device)
        missing = [m for m in model.heads if m not in towers]
        if missing:
            raise ValueError(f"{name}: no tower for the head(s) {missing}")
        self.model = model.eval().to(self.device)
        self.towers = {m: towers[m].eval().to(self.device) for m in model.heads}

    @property
    def modalities(self) -> list[str]:
        return list(self.model.heads)

    @property
    def dim(self) -> int:
        return self.model.config.dim

    def _embed_values(self, modality: str, values: list[Any]) -> torch.Tensor:
        tower = self.towers[modality]
        features = tower(to_device(tower.prepare(values), self.device))
        return self.model.embed(modality, features.float())


class DualEncoderEmbedder(Embedder):
    """Image and text towers of a CLIP-style dual encoder with the checkpoint's own preprocessing."""

    def __init__(self, pretrained: Pretrained, name: str | None = None, device: str | torch.device = "cpu"):
        if not isinstance(pretrained.model, DualEncoder):
            raise ValueError(f"{pretrained.source}: a {pretrained.family} checkpoint is not a dual encoder "
                             f"({type(pretrained.model).__name__})")
        super().__init__(name or pretrained.source, device)
        self.pretrained = pretrained
        self.model: DualEncoder = pretrained.model.eval().to(self.device)

    @property
    def modalities(self) -> list[str]:
        return [m for m, p in (("image", self.pretrained.image), ("text", self.pretrained.text)) if p is not None]

    @property
    def dim(self) -> int:
        return self.model.vision.out_dim

    def _embed_values(self, modality: str, values: list[Any]) -> torch.Tensor:
        if modality == "image":
            return self.model.encode_image(self.pretrained.image(values).to(self.device))
        ids, padding = self.pretrained.text(values)
        return self.model.encode_text(ids.to(self.device), padding.to(self.device))


class UnifiedEmbedder(Embedder):
    """A unified encoder trained from scratch: the modality's tokenizer, the shared trunk, its head."""

    def __init__(self, model: UnifiedModel, name: str = "unified", device: str | torch.device = "cpu"):
        super().__init__(name, device)
        self.model = model.eval().to(self.device)

    @property
    def modalities(self) -> list[str]:
        return list(self.model.tokenizers)

    @property
    def dim(self) -> int:
        return self.model.config.embed_dim

    def _embed_values(self, modality: str, values: list[Any]) -> torch.Tensor:
        batch = collate([{modality: v} for v in values], [modality])  # the batch convention, as in training
        x, lengths = batch[modality], batch.get("lengths", {}).get(modality)
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            x = x.float()
        return self.model.encode(modality, to_device(x, self.device), to_device(lengths, self.device))
