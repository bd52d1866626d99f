"""The composer's model: frozen towers' features -> per-modality projection heads -> one shared space.

Heads live in a ModuleDict keyed by modality name (no per-modality branches); a modality is added later by
adding a head and training it against the frozen others (progressive alignment)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.core.config import from_dict
from sensorium.core.files import read_json, read_safetensors, save_safetensors, write_text_atomic


@dataclass
class HeadConfig:
    """A projection head: input feature size, hidden size (0 = linear), dropout."""

    in_dim: int
    hidden: int = 1024
    dropout: float = 0.1


class ProjectionHead(nn.Module):
    """LayerNorm -> Linear (or a residual 2-layer MLP) into the shared space."""

    def __init__(self, config: HeadConfig, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(config.in_dim)
        self.linear = nn.Linear(config.in_dim, out_dim)
        self.mlp = (nn.Sequential(nn.Linear(config.in_dim, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
                                  nn.Linear(config.hidden, out_dim)) if config.hidden else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        out = self.linear(x)
        return out + self.mlp(x) if self.mlp is not None else out


@dataclass
class AlignedConfig:
    """Shared-space size, the heads, and which tower feeds each modality (recorded for inference)."""

    dim: int = 512
    heads: dict[str, HeadConfig] = field(default_factory=dict)
    towers: dict[str, str] = field(default_factory=dict)
    init_temperature: float = 0.07
    init_bias: float = -10.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "aligned model config") -> "AlignedConfig":
        """Inverse of `to_json`, through the one config loader (types checked, unknown keys named)."""
        return from_dict(cls, data, where)


class AlignedModel(nn.Module):
    """Projection heads per modality plus a learnable temperature (and SigLIP bias)."""

    def __init__(self, config: AlignedConfig):
        super().__init__()
        self.config = config
        self.heads = nn.ModuleDict({m: ProjectionHead(h, config.dim) for m, h in config.heads.items()})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(config.init_bias))

    @property
    def modalities(self) -> list[str]:
        return list(self.heads)

    def add_modality(self, name: str, head: HeadConfig, tower: str) -> None:
        """Add a head for a new modality (progressive alignment); existing heads are untouched."""
        if name in self.heads:
            raise ValueError(f"modality {name!r} already has a head")
        self.config.heads[name] = head
        self.config.towers[name] = tower
        self.heads[name] = ProjectionHead(head, self.config.dim)

    def embed(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        """Tower features -> L2-normalised shared-space embeddings."""
        if modality not in self.heads:
            raise KeyError(f"no head for modality {modality!r}; this model has {self.modalities}")
        return F.normalize(self.heads[modality](features), dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embed every modality in the batch that has a head (the batch convention: dict by modality)."""
        return {m: self.embed(m, x) for m, x in batch.items() if m in self.heads}

    def save(self, directory: str | Path) -> None:
        """safetensors weights + JSON config in `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_safetensors({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                         directory / "model.safetensors")
        write_text_atomic(directory / "config.json", json.dumps(self.config.to_json(), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "AlignedModel":
        directory = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{directory / name}: missing; is {directory} a Sensorium aligned model?")
        model = cls(AlignedConfig.from_json(read_json(directory / "config.json"), str(directory / "config.json")))
        state = read_safetensors(directory / "model.safetensors")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{directory / 'model.safetensors'}: missing keys {missing}, unexpected keys {unexpected}")
        return model
