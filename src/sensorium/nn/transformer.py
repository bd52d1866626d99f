"""Pre-norm transformer: configurable norm (LayerNorm / RMSNorm), MLP (GELU, tanh-GELU, quick-GELU,
SwiGLU) and attention options, described by one `TransformerConfig` dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.nn.attention import Attention, KVCache


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 and cast back (as Llama-family checkpoints expect)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize the last dimension to unit RMS, then scale."""
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """'layernorm' or 'rmsnorm' -> the module."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r} (expected 'layernorm' or 'rmsnorm')")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the GELU approximation used by OpenAI CLIP."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": quick_gelu,
    "silu": F.silu,
    "relu": F.relu,
}


def activation(name: str):
    """Activation function by name (see ACTIVATIONS)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}, swiglu")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """fc2(act(fc1 x)), or SwiGLU down(silu(gate x) * up x) when activation == 'swiglu'."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu", bias: bool = True):
        super().__init__()
        self.gated = act == "swiglu"
        if self.gated:
            self.gate = nn.Linear(dim, hidden, bias=bias)
            self.up = nn.Linear(dim, hidden, bias=bias)
            self.down = nn.Linear(hidden, dim, bias=bias)
        else:
            self.act = activation(act)
            self.fc1 = nn.Linear(dim, hidden, bias=bias)
            self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor, groups: torch.Tensor | int | None = None) -> torch.Tensor:
        """[..., dim] -> [..., dim]. `groups` (token modality ids) is accepted and ignored: one MLP for all,
        so a dense MLP, modality experts and a mixture of experts are interchangeable in a `Block`."""
        if self.gated:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.fc2(self.act(self.fc1(x)))


@dataclass
class TransformerConfig:
    """Shape and options of a pre-norm transformer stack."""

    dim: int = 512
    depth: int = 6
    n_heads: int = 8
    n_kv_heads: int | None = None  # None = n_heads (no GQA)
    head_dim: int | None = None  # None = dim // n_heads
    mlp_hidden: int = 2048
    activation: str = "gelu"  # gelu | gelu_tanh | quick_gelu | silu | relu | swiglu
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    qkv_bias: bool = True
    out_bias: bool = True
    mlp_bias: bool = True
    fused_qkv: bool = False


class Block(nn.Module):
    """x + attn(norm1 x), then x + mlp(norm2 x). `mlp` replaces the dense MLP (modality experts, MoE)."""

    def __init__(self, cfg: TransformerConfig, mlp: nn.Module | None = None):
        super().__init__()
        self.norm1 = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, qkv_bias=cfg.qkv_bias,
                              out_bias=cfg.out_bias, fused_qkv=cfg.fused_qkv)
        self.norm2 = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.mlp = mlp if mlp is not None else MLP(cfg.dim, cfg.mlp_hidden, cfg.activation, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, cache: KVCache | None = None,
                layer: int = 0, groups: torch.Tensor | int | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, dim] -> [B, T, dim]; arguments as in `Attention.forward`, `groups` routes modality experts.
        With `keep` [B, K] (positions) the output is those rows only, [B, K, dim]: queries from the K rows, keys
        and values from all T (`mask` then [B|1, 1, K, T]), and the output projection, MLP, norms and residuals
        on K rows: what a model pooling one position needs of its last block."""
        if keep is not None:
            if rope is not None or cache is not None or groups is not None or is_causal:
                raise ValueError("keep= (the block at chosen positions) does not combine with rope, cache, groups "
                                 "or is_causal (pass the [B, 1, K, T] mask)")
            h = self.norm1(x)
            rows = keep[..., None].expand(-1, -1, x.shape[-1])
            x = x.gather(1, rows) + self.attn(h.gather(1, rows), mask=mask, context=h)
            return x + self.mlp(self.norm2(x))
        x = x + self.attn(self.norm1(x), mask=mask, is_causal=is_causal, rope=rope, cache=cache, layer=layer)
        return x + self.mlp(self.norm2(x), groups)


class Transformer(nn.Module):
    """A stack of `cfg.depth` pre-norm blocks (no final norm: models add their own). `mlp_factory(layer)`
    gives a block's feed-forward module (None: the dense MLP), e.g. modality experts or a mixture of experts."""

    def __init__(self, cfg: TransformerConfig, mlp_factory: Callable[[int], nn.Module | None] | None = None):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg, mlp_factory(i) if mlp_factory else None) for i in range(cfg.depth))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, cache: KVCache | None = None,
                groups: torch.Tensor | int | None = None, keep: torch.Tensor | None = None,
                keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, dim] -> [B, T, dim] through every block. With `keep` [B, K] (positions) only those rows are
        wanted: the last block computes just them (`Block.forward`'s keep=, attention mask `keep_mask`
        [B|1, 1, K, T]) and the result is [B, K, dim], the rows the full stack gives there."""
        if keep is not None and (rope is not None or cache is not None or groups is not None):
            raise ValueError("keep= (the last block at chosen positions) does not combine with rope, cache or groups")
        if keep is not None and not len(self.blocks):
            return x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
        blocks = self.blocks if keep is None else self.blocks[:-1]
        for i, block in enumerate(blocks):
            x = block(x, mask=mask, is_causal=is_causal, rope=rope, cache=cache, layer=i, groups=groups)
        return x if keep is None else self.blocks[-1](x, mask=keep_mask, layer=len(blocks), keep=keep)
