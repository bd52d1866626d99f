"""Symile (Saporta et al., NeurIPS 2024): contrastive learning for any number of modalities with the multilinear
inner product MIP(x, y, z, ...) = sum_d x_d y_d z_d ..., which captures joint (higher-order) information that
pairwise CLIP misses: if c = a XOR b, no pair is informative but the triple is.

Each modality in turn is the anchor; its positive is the MIP with the other modalities of the same sample, and
negatives are MIPs with non-anchor rows from other samples:
- `negative_sampling="n"`: every non-anchor modality is shuffled (one random permutation each), giving n - 1
  negatives per anchor row (O(n) memory), as in the reference implementation;
- `negative_sampling="n_squared"`: every combination of non-anchor rows, n^(M-1) - 1 negatives per anchor row.

Missing modalities, as the paper and its repository handle them, are the encoder's business: an absent modality
is encoded from a learned "missing" input (the reference repo feeds a mean input plus a learned missingness
embedding, or a [MISSING] token for text) and the sample still takes part in the loss. `mask` is the other
option: rows where it is False are dropped from the loss entirely.

Across processes it follows `ClipLoss`: embeddings are gathered with gradient, `local_loss` keeps queries local,
and the permutations for "n" sampling come from a generator seeded by (seed, call count) so every rank and a
single process on the same global batch draw the same negatives. The call count is a buffer: it is saved with
the model, so a resumed run draws the negatives the uninterrupted run would have drawn."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.objectives.contrastive import Shard, _scale, as_list, check_batch

NEGATIVE_SAMPLING = ("n", "n_squared")


def mip(*reps: torch.Tensor) -> torch.Tensor:
    """Multilinear inner product of row-aligned [B, D] tensors -> [B]."""
    return _product(reps).sum(dim=-1)


def _product(reps: Sequence[torch.Tensor]) -> torch.Tensor:
    out = reps[0]
    for r in reps[1:]:
        out = out * r
    return out


def symile_scores(candidates: torch.Tensor, given: Sequence[torch.Tensor]) -> torch.Tensor:
    """Zero-shot scores [B, K]: MIP of each candidate [K, D] with the given modalities' rows (each [B, D])."""
    return _product(given) @ candidates.T


def pairwise_scores(candidates: torch.Tensor, given: Sequence[torch.Tensor]) -> torch.Tensor:
    """The pairwise-CLIP counterpart of `symile_scores`: sum of dot products over every pair of the triple
    (candidate with each given modality, plus the given modalities with each other)."""
    scores = sum(g @ candidates.T for g in given)
    for i in range(len(given)):
        for j in range(i + 1, len(given)):
            scores = scores + (given[i] * given[j]).sum(-1, keepdim=True)
    return scores


def _logits_n(anchors: torch.Tensor, positives: list[torch.Tensor], others: list[torch.Tensor], offset: int,
              generator: torch.Generator) -> torch.Tensor:
    """[n_q, N]: anchors against shuffled products of the non-anchor rows, positives on column offset + i."""
    n = others[0].shape[0]
    shuffled = _product([o[torch.randperm(n, generator=generator).to(o.device)] for o in others])
    logits = anchors @ shuffled.T
    rows = torch.arange(anchors.shape[0], device=anchors.device)
    diagonal = torch.zeros_like(logits, dtype=torch.bool)
    diagonal[rows, rows + offset] = True
    return torch.where(diagonal, (anchors * _product(positives)).sum(-1, keepdim=True), logits)


def _logits_n_squared(anchors: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """[n_q, N^K]: anchors against every combination of the K non-anchor modalities' rows. Block s of columns
    pairs row j of the first with rows j - s of the others (all shifts), so block 0 holds the positives."""
    n = others[0].shape[0]
    combos = others[0]  # [C, D], C grows by a factor n per extra modality
    index = (torch.arange(n, device=anchors.device)[None, :] - torch.arange(n, device=anchors.device)[:, None]) % n
    for other in others[1:]:
        rolled = other[index]  # [n shifts, n, D]: rolled[s, j] = other[j - s]
        reps = combos.shape[0] // n
        combos = (combos.view(reps, n, -1)[None] * rolled[:, None]).reshape(-1, combos.shape[-1])
    return anchors @ combos.T


class SymileLoss(nn.Module):
    """Symile over M >= 2 modalities: mean over anchors of the cross-entropy of positive vs negative MIPs."""

    def __init__(self, negative_sampling: str = "n", local_loss: bool = False, seed: int = 0):
        super().__init__()
        if negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLING}, got {negative_sampling!r}")
        self.negative_sampling, self.local_loss, self.seed = negative_sampling, local_loss, seed
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    uses_bias = False

    def forward(self, embeddings: Sequence[torch.Tensor] | Mapping[str, torch.Tensor], logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                groups: torch.Tensor | None = None) -> torch.Tensor:
        """embeddings: M tensors [B, D] (a list, or a dict by modality) -> scalar loss; `mask` [B] keeps rows.
        `logit_bias` and `groups` are accepted for the common signature and not used (Symile has neither)."""
        reps = as_list(embeddings, None, "symile")
        shard = Shard.of(check_batch(*reps), mask, reps[0].device)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.calls))
        self.calls += 1
        if shard.n_global == 0:
            return sum(r.sum() for r in reps) * 0.0
        local = self.local_loss and shard.distributed
        gathered = [shard.gather(r) for r in reps]
        queries = [shard.local(r) for r in reps] if local else gathered
        offset = shard.offset if local else 0
        scale = _scale(logit_scale)
        losses = []
        for m in range(len(reps)):
            others = [g for j, g in enumerate(gathered) if j != m]
            if self.negative_sampling == "n":
                positives = [q for j, q in enumerate(queries) if j != m]
                logits = _logits_n(queries[m], positives, others, offset, generator)
            else:
                logits = _logits_n_squared(queries[m], others)
            targets = torch.arange(offset, offset + queries[m].shape[0], device=logits.device)
            losses.append(shard.reduce(F.cross_entropy(scale * logits, targets, reduction="none"), local))
        return sum(losses) / len(losses)
