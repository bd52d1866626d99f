"""Contrastive objectives as nn.Modules: CLIP (InfoNCE, learnable temperature) and SigLIP (pairwise sigmoid).

Both run on one process or across processes: with torch.distributed initialised, embeddings are
all-gathered with gradient (`torch.distributed.nn.all_gather`); `local_loss=True` scores local queries
against the global batch only (open_clip's memory-saving option). A `mask` drops samples where a modality is
absent (the batch's `present` masks); it is applied after gathering, so ranks may hold different numbers of
present samples. Losses are scaled so that the mean over ranks equals the single-process loss on the global
batch, and gradients averaged over ranks (as DDP does) equal the single-process gradients. Every rank must
hold the same local batch size (use drop_last), as with any all-gather, and every rank passes a mask or none.
Without a mask the losses never wait for the GPU (no host sync), so a training step can queue its backward
while the forward still runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

try:  # torch >= 2.9: functional collectives (torch.distributed.nn's all_gather is deprecated there)
    from torch.distributed._functional_collectives import all_gather_single_autograd
except ImportError:
    all_gather_single_autograd = None
    from torch.distributed.nn.functional import all_gather


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks; gradients flow back to each rank's slice (summed over ranks' losses)."""
    rank, world = _world()
    if world == 1:
        return x
    if all_gather_single_autograd is None:
        return torch.cat(all_gather(x.contiguous()), dim=0)
    return all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD) * 1  # * 1 waits on the async result


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (masks, group ids) from all ranks, without gradient."""
    rank, world = _world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@dataclass
class Shard:
    """This rank's place in the global batch once masked rows are dropped: `offset` is the index of its first
    kept row among all kept rows, so positives of local queries sit at columns offset .. offset + n_local."""

    rank: int
    world: int
    local_mask: torch.Tensor | None  # None: every row is kept
    global_mask: torch.Tensor | None
    offset: int
    n_local: int
    n_global: int

    @classmethod
    def of(cls, batch_size: int, mask: torch.Tensor | None, device: torch.device) -> "Shard":
        """Gather the masks of every rank (one small collective) and locate this rank's kept rows. Without a
        mask every row is kept and the positions follow from rank and batch size: no collective, no host sync."""
        rank, world = _world()
        if mask is None:
            return cls(rank, world, None, None, rank * batch_size, batch_size, world * batch_size)
        local = mask.bool().to(device)
        if local.shape != (batch_size,):
            raise ValueError(f"mask has shape {tuple(local.shape)} but the batch has {batch_size} rows")
        glob = gather_no_grad(local)
        offset = int(glob[: rank * batch_size].sum())
        return cls(rank, world, local, glob, offset, int(local.sum()), int(glob.sum()))

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world > 1

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's kept rows."""
        return x if self.local_mask is None else x[self.local_mask]

    def gather(self, x: torch.Tensor, grad: bool = True) -> torch.Tensor:
        """Every rank's kept rows, in rank order (the single-process batch order)."""
        out = gather_with_grad(x) if grad else gather_no_grad(x)
        return out if self.global_mask is None else out[self.global_mask]

    def reduce(self, per_row: torch.Tensor, local: bool) -> torch.Tensor:
        """Loss from per-query losses: the mean over the global batch when queries are global; with `local`
        queries, their sum scaled by world / n_global, so the mean over ranks is the global mean."""
        return per_row.sum() * (self.world if local else 1) / max(1, self.n_global)


def as_list(embeddings: Sequence[torch.Tensor] | Mapping[str, torch.Tensor], need: int | None,
            loss: str) -> list[torch.Tensor]:
    """Embeddings given as a sequence or a dict by modality -> a list; `need` (if set) is how many the loss takes."""
    reps = list(embeddings.values()) if isinstance(embeddings, Mapping) else list(embeddings)
    if need is not None and len(reps) != need:
        raise ValueError(f"the {loss} loss takes {need} embeddings (one pair), got {len(reps)}; "
                         "score several pairs with objectives.MultiModalObjective")
    if need is None and len(reps) < 2:
        raise ValueError(f"the {loss} loss needs at least two modalities, got {len(reps)}")
    return reps


def check_batch(*tensors: torch.Tensor) -> int:
    """The common batch size of embeddings, or a ValueError naming the sizes that differ."""
    sizes = [t.shape[0] for t in tensors]
    if len(set(sizes)) > 1:
        raise ValueError(f"embeddings have different batch sizes {sizes}; every modality needs one row per sample")
    return sizes[0]


def _scale(logit_scale: torch.Tensor) -> torch.Tensor:
    """A 0-dim logit_scale is log(1/temperature) and is exponentiated; anything else is used as given."""
    return logit_scale.exp() if logit_scale.dim() == 0 else logit_scale


def _targets(rows: torch.Tensor | None, cols: torch.Tensor | None, offset: int, n: int,
             device: torch.device) -> torch.Tensor:
    if rows is None or cols is None:
        return torch.arange(offset, offset + n, device=device)
    same = (rows[:, None] == cols[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over normalised embeddings: mean of a->b and b->a cross-entropy.

    `groups` (interchangeable samples, e.g. identical captions) gives soft targets spread over the group; for
    exact duplicates this equals the plain loss (their rows are identical); the argument keeps one signature
    with SigLipLoss, where it does matter (a duplicate is otherwise a negative)."""

    uses_bias = False

    def __init__(self, local_loss: bool = False):
        super().__init__()
        self.local_loss = local_loss

    def forward(self, embeddings: Sequence[torch.Tensor] | Mapping[str, torch.Tensor], logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                groups: torch.Tensor | None = None) -> torch.Tensor:
        """Two embeddings [B, D] (normalised), mask [B] of samples with both, groups [B] ids -> scalar loss.
        `logit_bias` is accepted for the common signature and not used."""
        a, b = as_list(embeddings, 2, "clip")
        shard = Shard.of(check_batch(a, b), mask, a.device)
        if shard.n_global == 0:
            return (a.sum() + b.sum()) * 0.0
        scale = _scale(logit_scale)
        all_a, all_b = shard.gather(a), shard.gather(b)
        all_groups = shard.gather(groups, grad=False) if groups is not None else None
        local = self.local_loss and shard.distributed
        if local:
            q_groups = shard.local(groups) if groups is not None else None
            targets = _targets(q_groups, all_groups, shard.offset, shard.n_local, a.device)
            loss_ab = F.cross_entropy(scale * shard.local(a) @ all_b.T, targets, reduction="none")
            loss_ba = F.cross_entropy(scale * shard.local(b) @ all_a.T, targets, reduction="none")
        else:
            logits = scale * all_a @ all_b.T
            targets = _targets(all_groups, all_groups, 0, shard.n_global, a.device)
            loss_ab = F.cross_entropy(logits, targets, reduction="none")
            loss_ba = F.cross_entropy(logits.T, targets, reduction="none")
        return 0.5 * (shard.reduce(loss_ab, local) + shard.reduce(loss_ba, local))


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss (Zhai et al. 2023): every pair is a binary match/non-match decision, so no
    softmax over the batch is needed. Normalised by the number of positives, as in the paper."""

    uses_bias = True

    def __init__(self, local_loss: bool = True):
        super().__init__()
        self.local_loss = local_loss

    def forward(self, embeddings: Sequence[torch.Tensor] | Mapping[str, torch.Tensor], logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                groups: torch.Tensor | None = None) -> torch.Tensor:
        """Two embeddings [B, D] (normalised), learnable log-scale and bias, mask [B], groups [B] -> scalar loss."""
        a, b = as_list(embeddings, 2, "siglip")
        if logit_bias is None:
            raise ValueError("the siglip loss needs a logit_bias (a learnable scalar, e.g. initialised at -10)")
        shard = Shard.of(check_batch(a, b), mask, a.device)
        if shard.n_global == 0:
            return (a.sum() + b.sum()) * 0.0
        all_b = shard.gather(b)
        all_groups = shard.gather(groups, grad=False) if groups is not None else None
        local = self.local_loss and shard.distributed
        if local:
            queries, offset = shard.local(a), shard.offset
            q_groups = shard.local(groups) if groups is not None else None
        else:
            queries, offset, q_groups = shard.gather(a), 0, all_groups
        logits = _scale(logit_scale) * queries @ all_b.T + logit_bias
        if q_groups is not None:
            labels = 2.0 * (q_groups[:, None] == all_groups[None, :]).float() - 1.0
        else:
            labels = -torch.ones_like(logits)
            idx = torch.arange(queries.shape[0], device=a.device)
            labels[idx, idx + offset] = 1.0
        return shard.reduce(-F.logsigmoid(labels * logits).sum(dim=1), local)
