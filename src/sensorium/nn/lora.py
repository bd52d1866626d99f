"""Low-rank adapters (LoRA): wrap chosen nn.Linear layers so that only a rank-r update trains, and merge the
update back into plain Linear layers afterwards (checkpoints stay in the base model's layout)."""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / rank) * B(A(dropout(x))); the base layer is frozen and B starts at zero."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale, self.drop = alpha / rank, nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """base(x) plus the low-rank update."""
        update = (self.drop(x) @ self.lora_a.t().to(x.dtype)) @ self.lora_b.t().to(x.dtype)
        return self.base(x) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain Linear whose weight includes the update."""
        with torch.no_grad():
            self.base.weight += (self.scale * self.lora_b @ self.lora_a).to(self.base.weight.dtype)
        return self.base.requires_grad_(True)


def apply_lora(model: nn.Module, targets: tuple[str, ...] = ("q", "k", "v", "out"), rank: int = 8,
               alpha: float = 16.0, dropout: float = 0.0) -> list[nn.Parameter]:
    """Freeze `model` and wrap every nn.Linear whose attribute name is in `targets`; returns the LoRA parameters."""
    model.requires_grad_(False)
    wrapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                layer = LoRALinear(child, rank, alpha, dropout)
                setattr(parent, name, layer)
                wrapped.append(layer)
    if not wrapped:
        raise ValueError(f"no nn.Linear named any of {targets} in {type(model).__name__}")
    return [p for layer in wrapped for p in (layer.lora_a, layer.lora_b)]


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear in `model` by its merged Linear; returns how many were merged."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                count += 1
    return count
