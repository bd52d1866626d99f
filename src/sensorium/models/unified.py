"""A unified encoder trained from scratch (Meta-Transformer, ONE-PEACE, IMP): per-modality tokenizers and a learned
modality embedding feed a transformer, either one trunk shared by every modality or a separate tower per
modality, with dense, modality-expert (ONE-PEACE) or mixture-of-experts (IMP) feed-forward layers. Each
modality is encoded on its own (no cross-modal attention), mean-pooled over its real tokens and projected into
one normalised space, so CLIP, SigLIP and Symile apply directly. Nothing here names a modality: the config's
`tokenizers` mapping decides which modalities the model has."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.core.config import checked, from_dict
from sensorium.core.files import load_state, save_state
from sensorium.nn import ModalityExperts, MoE, Transformer, TransformerConfig, attention_mask, make_norm, moe_aux_loss
from sensorium.nn.tokenizers import build_tokenizer

ARRANGEMENTS = ("shared", "separate")
FFNS = ("dense", "experts", "moe")


@dataclass
class MoEConfig:
    """Token-choice mixture of experts (used when `ffn: moe`), in every `every`-th block."""

    n_experts: int = 4
    top_k: int = 2
    capacity_factor: float = 0.0
    balance_weight: float = 0.01
    z_weight: float = 0.0
    every: int = 1


@dataclass
class UnifiedConfig:
    """Shape of a unified encoder: tokenizer options by modality, the trunk, its arrangement and FFN kind."""

    tokenizers: dict[str, dict[str, Any]] = checked(default_factory=dict, replace=True)  # a recipe's replaces these whole
    trunk: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=128, depth=3, n_heads=4,
                                                                               mlp_hidden=512, fused_qkv=True))
    embed_dim: int = checked(128, min=1)
    arrangement: str = "shared"  # shared | separate
    ffn: str = "dense"  # dense | experts | moe
    moe: MoEConfig = field(default_factory=MoEConfig)
    logit_scale: float = math.log(1 / 0.07)
    logit_bias: float = -10.0

    def validate(self) -> None:
        """Raise ValueError on settings that cannot make a model."""
        if not self.tokenizers:
            raise ValueError("a unified model needs at least one modality under `tokenizers`")
        if self.arrangement not in ARRANGEMENTS:
            raise ValueError(f"arrangement must be one of {ARRANGEMENTS}, got {self.arrangement!r}")
        if self.ffn not in FFNS:
            raise ValueError(f"ffn must be one of {FFNS}, got {self.ffn!r}")
        if self.ffn == "experts" and self.arrangement == "separate":
            raise ValueError("ffn=experts gives each modality its own FFN inside a shared trunk; with separate "
                             "towers every FFN is already modality-specific (use arrangement=shared)")


def batch_size(batch: dict[str, Any], names: list[str]) -> int:
    """The batch size shared by every modality in `names` (values and present masks), or a ValueError naming
    each modality's size when they disagree."""
    sizes: dict[str, int] = {}
    for name in names:
        value = batch.get(name)
        if value is None:
            have = ", ".join(k for k in batch.get("present", {}) if batch.get(k) is not None)
            raise ValueError(f"the batch has no {name!r} (it has: {have})")
        sizes[name] = value.shape[0] if isinstance(value, torch.Tensor) else len(value)
        present = batch.get("present", {}).get(name)
        if present is not None:
            sizes[f"present[{name}]"] = present.shape[0]
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise ValueError(f"batch sizes differ across modalities ({listing}); every modality needs one row per sample")
    return next(iter(sizes.values())) if sizes else 0


class UnifiedModel(nn.Module):
    """Tokenizers -> (+ modality embedding) -> shared trunk or per-modality towers -> pooled, normalised heads."""

    def __init__(self, config: UnifiedConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.modalities = list(config.tokenizers)
        t = config.trunk
        self.tokenizers = nn.ModuleDict({m: build_tokenizer(m, t.dim, opts) for m, opts in config.tokenizers.items()})
        self.modality_embedding = nn.Embedding(len(self.modalities), t.dim)
        self.missing = nn.Parameter(torch.randn(len(self.modalities), t.dim) * 0.02)
        if config.arrangement == "shared":
            self.trunks = nn.ModuleDict({"shared": Transformer(t, self._ffn_factory())})
        else:
            self.trunks = nn.ModuleDict({m: Transformer(t, self._ffn_factory()) for m in self.modalities})
        self.norms = nn.ModuleDict({m: make_norm(t.norm, t.dim, t.norm_eps) for m in self.modalities})
        self.heads = nn.ModuleDict({m: nn.Linear(t.dim, config.embed_dim, bias=False) for m in self.modalities})
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(config.logit_bias)))
        self.aux_loss = torch.zeros(())

    def _ffn_factory(self):
        t, moe, n = self.config.trunk, self.config.moe, len(self.modalities)
        if self.config.ffn == "experts":
            return lambda layer: ModalityExperts(t.dim, t.mlp_hidden, n, t.activation, t.mlp_bias)
        if self.config.ffn == "moe":
            return lambda layer: MoE(t.dim, t.mlp_hidden, moe.n_experts, moe.top_k, t.activation, t.mlp_bias,
                                     moe.capacity_factor, moe.balance_weight, moe.z_weight) \
                if layer % moe.every == moe.every - 1 else None
        return None

    def _index(self, name: str) -> int:
        if name not in self.tokenizers:
            raise ValueError(f"the model has no tokenizer for modality {name!r} (it has: {', '.join(self.modalities)});"
                             f" add `tokenizers.{name}` to the model config")
        return self.modalities.index(name)

    def encode(self, name: str, values: Any, lengths: torch.Tensor | None = None,
               present: torch.Tensor | None = None) -> torch.Tensor:
        """One modality's batch -> normalised embeddings [B, embed_dim]. Absent samples (`present` False) are
        encoded from the modality's learned [MISSING] token, as Symile handles missing data."""
        idx = self._index(name)
        tokens = self.tokenizers[name](values, lengths)
        x, mask = tokens.x + self.modality_embedding.weight[idx], tokens.mask
        if present is not None and not bool(present.all()):
            absent = ~present.to(x.device).bool()
            first = torch.zeros_like(mask)
            first[:, 0] = True
            mask = torch.where(absent[:, None], first, mask)
            x = torch.where(absent[:, None, None], self.missing[idx].expand_as(x), x)
        trunk = self.trunks["shared" if "shared" in self.trunks else name]
        attn = None if bool(mask.all()) else attention_mask(mask, x.shape[1], x.shape[1], causal=False)
        h = trunk(x, mask=attn, groups=idx)
        self.aux_loss = self.aux_loss + moe_aux_loss(trunk)
        weights = mask[..., None].to(h.dtype)
        pooled = (self.norms[name](h) * weights).sum(1) / weights.sum(1).clamp(min=1)
        return F.normalize(self.heads[name](pooled), dim=-1)

    def forward(self, batch: dict[str, Any], modalities: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Embeddings of every modality in the batch (its `present` masks), or of `modalities`. MoE auxiliary
        losses of this call are left in `self.aux_loss`."""
        names = list(modalities) if modalities is not None else list(batch.get("present", {}))
        for name in names:
            self._index(name)
        batch_size(batch, names)
        self.aux_loss = torch.zeros((), device=self.logit_scale.device)
        lengths = batch.get("lengths", {})
        return {m: self.encode(m, batch[m], lengths.get(m), batch.get("present", {}).get(m)) for m in names}

    def export_config(self) -> dict[str, Any]:
        """The config as a dict, with each tokenizer's `export_options()` folded in (e.g. the BPE vocabulary
        itself instead of a path), so a saved model rebuilds without the files it was trained from."""
        data = dataclasses.asdict(self.config)
        for name, tokenizer in self.tokenizers.items():
            if hasattr(tokenizer, "export_options"):
                data["tokenizers"][name] = {**data["tokenizers"][name], **tokenizer.export_options()}
        return data

    def save(self, directory: str | Path) -> Path:
        """Weights and config into `directory` (safetensors + JSON, no pickle)."""
        return save_state(directory, {"config": self.export_config(), "model": self.state_dict()})

    @classmethod
    def load(cls, directory: str | Path) -> "UnifiedModel":
        """Inverse of `save`."""
        state = load_state(directory)
        model = cls(from_dict(UnifiedConfig, state["config"], str(directory)))
        model.load_state_dict(state["model"])
        return model
