"""Modality experts (ONE-PEACE, SkillNet, VLMo): one feed-forward network per modality behind shared attention.
Routing is by the token's modality, known in advance, so there is no router and no balancing loss."""

from __future__ import annotations

import torch
from torch import nn

from sensorium.nn.transformer import MLP


class ModalityExperts(nn.Module):
    """`n_groups` MLPs; token t goes through expert `groups[t]` (an int for a whole single-modality batch, or a
    LongTensor [B, T] / [B] for mixed sequences)."""

    def __init__(self, dim: int, hidden: int, n_groups: int, act: str = "gelu", bias: bool = True):
        super().__init__()
        self.experts = nn.ModuleList(MLP(dim, hidden, act, bias) for _ in range(n_groups))

    def forward(self, x: torch.Tensor, groups: torch.Tensor | int | None = None) -> torch.Tensor:
        """x [B, T, dim] -> [B, T, dim] through each token's modality expert."""
        if groups is None:
            raise ValueError("ModalityExperts needs `groups` (the modality id of the tokens)")
        if isinstance(groups, int):
            return self.experts[groups](x)
        if groups.dim() == 1 and x.dim() == 3:
            groups = groups[:, None].expand(x.shape[:2])
        out = torch.zeros_like(x)
        for g in groups.unique().tolist():
            sel = groups == g
            out[sel] = self.experts[g](x[sel])
        return out
