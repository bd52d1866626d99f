"""Retrieval metrics: Recall@K (percent) and median rank, with groups of interchangeable targets (e.g. two
images whose captions are identical) so a query is right when it ranks any member of its group first."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

KS = (1, 5, 10)


def ranks(query: torch.Tensor, gallery: torch.Tensor, query_groups: torch.Tensor | None = None,
          gallery_groups: torch.Tensor | None = None, chunk: int = 1024) -> torch.Tensor:
    """1-based rank of the best relevant gallery item for each query (cosine similarity, ties pessimistic)."""
    query, gallery = F.normalize(query.float(), dim=-1), F.normalize(gallery.float(), dim=-1)
    n = query.shape[0]
    if query_groups is None or gallery_groups is None:
        if n != gallery.shape[0]:
            raise ValueError(f"without groups, query ({n}) and gallery ({gallery.shape[0]}) must pair up 1:1")
        query_groups = gallery_groups = torch.arange(n)
    out = torch.empty(n, dtype=torch.long)
    for start in range(0, n, chunk):
        sims = query[start:start + chunk] @ gallery.T
        relevant = query_groups[start:start + chunk, None] == gallery_groups[None, :]
        if not relevant.any(dim=1).all():
            raise ValueError("a query has no relevant item in the gallery")
        best = sims.masked_fill(~relevant, float("-inf")).max(dim=1).values
        out[start:start + chunk] = 1 + (sims.masked_fill(relevant, float("-inf")) >= best[:, None]).sum(dim=1)
    return out


def summarize(rank: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """R@K in percent and median rank from a vector of ranks."""
    out = {f"R@{k}": round(100.0 * (rank <= k).float().mean().item(), 2) for k in ks}
    out["median_rank"] = float(rank.float().median().item())
    return out


def retrieval_metrics(query: torch.Tensor, gallery: torch.Tensor, query_groups: torch.Tensor | None = None,
                      gallery_groups: torch.Tensor | None = None, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """R@K (percent) and median rank of `query` -> `gallery` retrieval."""
    return summarize(ranks(query, gallery, query_groups, gallery_groups), ks)


def chance_metrics(query_groups: torch.Tensor, gallery_groups: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Expected R@K and median rank of a random ranking, given how many relevant items each query has."""
    m = gallery_groups.shape[0]
    counts = torch.bincount(gallery_groups)
    r = counts[query_groups].double()
    out = {}
    for k in ks:
        # P(at least one of r relevant items in the top k of m) = 1 - C(m-r, k) / C(m, k)
        miss = torch.exp(torch.lgamma(m - r + 1) - torch.lgamma(m - r - k + 1).nan_to_num(float("inf"))
                         - math.lgamma(m + 1) + math.lgamma(m - k + 1)) if k < m else torch.zeros_like(r)
        miss = torch.where(m - r >= k, miss, torch.zeros_like(r))
        out[f"R@{k}"] = round(100.0 * (1 - miss).mean().item(), 2)
    out["median_rank"] = float(((m + 1) / (r + 1)).median().item())
    return out


def pairwise_retrieval(emb: dict[str, torch.Tensor], present: dict[str, torch.Tensor], groups: torch.Tensor
                     ) -> dict[str, Any]:
    """R@1/5/10 and median rank for every ordered pair (query -> gallery) over samples holding both modalities;
    samples of one group (same content) are interchangeable targets. Chance for the same galleries alongside. The
    one all-pairs implementation: the composer's, the unified encoder's and the benchmark harness's reports."""
    out: dict[str, Any] = {"retrieval": {}, "chance": {}, "n": {}}
    names = list(emb)
    for a in names:
        for b in names:
            if a == b:
                continue
            both = present[a] & present[b]
            if not bool(both.any()):
                continue  # no sample holds both: no retrieval to score
            g = groups[both]
            key = f"{a}->{b}"
            out["retrieval"][key] = retrieval_metrics(emb[a][both], emb[b][both], g, g)
            out["chance"][key] = chance_metrics(g, g)
            out["n"][key] = int(both.sum())
    return out
