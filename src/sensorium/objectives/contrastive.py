"""Contrastive objectives as nn.Modules: CLIP (InfoNCE, learnable temperature) and SigLIP (pairwise sigmoid).

Both run on one process or across processes: with torch.distributed initialised, embeddings are
all-gathered with gradient (`torch.distributed.nn.all_gather`); `local_loss=True` scores local queries
against the global batch only (open_clip's memory-saving option). A `mask` drops pairs where either
modality is absent (the batch's `present` masks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks; gradients flow back to each rank's slice."""
    rank, world = _world()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def _select(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if mask is None:
        return a, b
    mask = mask.bool()
    return a[mask], b[mask]


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over normalised embeddings: mean of a->b and b->a cross-entropy.

    With duplicates in a batch (same caption twice), `groups` marks interchangeable samples so a
    duplicate is not counted as a negative (soft targets spread over the group)."""

    def __init__(self, local_loss: bool = False):
        super().__init__()
        self.local_loss = local_loss

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
                mask: torch.Tensor | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
        if groups is not None and mask is not None:
            groups = groups[mask.bool()]
        a, b = _select(a, b, mask)
        if a.shape[0] == 0:
            return a.sum() * 0.0
        rank, world = _world()
        all_a, all_b = gather_with_grad(a), gather_with_grad(b)
        all_groups = gather_with_grad(groups) if groups is not None else None
        scale = logit_scale.exp() if logit_scale.dim() == 0 else logit_scale
        if self.local_loss and world > 1:
            offset = rank * a.shape[0]
            logits_ab, logits_ba = scale * a @ all_b.T, scale * b @ all_a.T
            targets = self._targets(groups, all_groups, offset, a.shape[0], all_a.shape[0], a.device)
        else:
            logits_ab = scale * all_a @ all_b.T
            logits_ba = logits_ab.T
            targets = self._targets(all_groups, all_groups, 0, all_a.shape[0], all_a.shape[0], a.device)
        return 0.5 * (F.cross_entropy(logits_ab, targets) + F.cross_entropy(logits_ba, targets))

    @staticmethod
    def _targets(rows: torch.Tensor | None, cols: torch.Tensor | None, offset: int, n: int, m: int,
                 device: torch.device) -> torch.Tensor:
        if rows is None or cols is None:
            return torch.arange(offset, offset + n, device=device)
        same = (rows[:, None] == cols[None, :]).float()
        return same / same.sum(dim=1, keepdim=True)


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss (Zhai et al. 2023): every pair is a binary match/non-match decision, so no
    softmax over the batch is needed. Normalised by the number of positives, as in the paper."""

    def __init__(self, local_loss: bool = True):
        super().__init__()
        self.local_loss = local_loss

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor,
                mask: torch.Tensor | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
        if groups is not None and mask is not None:
            groups = groups[mask.bool()]
        a, b = _select(a, b, mask)
        if a.shape[0] == 0:
            return a.sum() * 0.0
        rank, world = _world()
        all_b = gather_with_grad(b)
        all_groups = gather_with_grad(groups) if groups is not None else None
        scale = logit_scale.exp()
        if self.local_loss or world == 1:
            queries, offset, q_groups = a, rank * a.shape[0], groups
        else:
            queries, offset, q_groups = gather_with_grad(a), 0, all_groups
        logits = scale * queries @ all_b.T + logit_bias
        if q_groups is not None:
            labels = 2.0 * (q_groups[:, None] == all_groups[None, :]).float() - 1.0
        else:
            labels = -torch.ones_like(logits)
            idx = torch.arange(queries.shape[0], device=a.device)
            labels[idx, idx + offset] = 1.0
        return -F.logsigmoid(labels * logits).sum() / queries.shape[0]
