"""Token-choice mixture of experts (Switch / GShard / Mixtral routing, as IMP and Uni-MoE use it): a router picks
the top-k experts of every token, outputs are mixed by the renormalised router probabilities, and an optional
capacity drops the overflow of busy experts (those tokens keep only the residual path).

The load-balancing loss (Switch Transformer) is E * sum_e f_e * P_e, where f_e is the fraction of routed
token slots sent to expert e and P_e the mean router probability of e: it is 1 when routing is uniform and grows
as experts are favoured. An optional router z-loss (ST-MoE) keeps router logits small. Each forward leaves
`aux_loss` (weighted sum of both) and `stats` on the module; `moe_aux_loss(model)` sums them over a model."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.nn.transformer import MLP


class MoE(nn.Module):
    """`n_experts` MLPs behind a linear router with top-`top_k` token-choice routing."""

    def __init__(self, dim: int, hidden: int, n_experts: int = 4, top_k: int = 2, act: str = "gelu",
                 bias: bool = True, capacity_factor: float = 0.0, balance_weight: float = 0.01,
                 z_weight: float = 0.0):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and n_experts={n_experts}")
        self.n_experts, self.top_k, self.capacity_factor = n_experts, top_k, capacity_factor
        self.balance_weight, self.z_weight = balance_weight, z_weight
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(dim, hidden, act, bias) for _ in range(n_experts))
        self.aux_loss: torch.Tensor = torch.zeros(())
        self.stats: dict[str, float] = {}

    def capacity(self, tokens: int) -> int:
        """Token slots per expert (capacity_factor * tokens * k / E), or every token when the factor is 0."""
        if self.capacity_factor <= 0:
            return tokens
        return max(1, math.ceil(self.capacity_factor * tokens * self.top_k / self.n_experts))

    def forward(self, x: torch.Tensor, groups: torch.Tensor | int | None = None) -> torch.Tensor:
        """x [..., dim] -> [..., dim]; `groups` is ignored (routing is learned, not by modality)."""
        flat = x.reshape(-1, x.shape[-1])
        logits = self.router(flat).float()
        probs = logits.softmax(dim=-1)
        gate, chosen = probs.topk(self.top_k, dim=-1)  # [N, k]
        gate = gate / gate.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        capacity = self.capacity(flat.shape[0])
        dropped = 0
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)  # token order = priority (first come)
            if token.numel() > capacity:
                dropped += token.numel() - capacity
                token, slot = token[:capacity], slot[:capacity]
            if token.numel():
                out.index_add_(0, token, expert(flat[token]) * gate[token, slot, None].to(flat.dtype))
        fraction = F.one_hot(chosen, self.n_experts).float().sum(dim=(0, 1)) / chosen.numel()
        balance = self.n_experts * (fraction * probs.mean(dim=0)).sum()
        z = torch.logsumexp(logits, dim=-1).pow(2).mean()
        self.aux_loss = self.balance_weight * balance + self.z_weight * z
        self.stats = {"balance": float(balance.detach()), "z": float(z.detach()), "dropped": dropped / max(1, chosen.numel())}
        return out.reshape(x.shape)


def moe_aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the auxiliary losses left by every MoE layer of `model` in its last forward (0 if none)."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MoE)]
    return sum(losses) if losses else torch.zeros(())
