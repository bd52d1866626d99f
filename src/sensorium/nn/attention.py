"""Multi-head attention on `F.scaled_dot_product_attention`: fused or separate QKV, causal and padding
masks, optional RoPE, grouped-query attention (GQA) and a key/value cache for generation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.nn.rope import apply_rotary


class KVCache:
    """Keys and values of past positions, one entry per layer, grown by `update` during generation."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new k, v [B, H_kv, T, D] for `layer` and return all cached k, v for it."""
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def __len__(self) -> int:
        """Number of cached positions (0 when empty)."""
        return next(iter(self.keys.values())).shape[2] if self.keys else 0


def attention_mask(padding: torch.Tensor | None, q_len: int, k_len: int, causal: bool,
                   device: torch.device | None = None) -> torch.Tensor | None:
    """Boolean mask [B or 1, 1, q_len, k_len] (True = may attend) from a key padding mask [B, k_len]
    (True = real token) and/or causality; queries sit at the last `q_len` of the `k_len` positions.
    Rows that would attend to nothing (padding queries) attend everywhere, so SDPA never returns NaN."""
    if padding is None and not causal:
        return None
    device = padding.device if padding is not None else device
    mask = torch.ones(1, 1, q_len, k_len, dtype=torch.bool, device=device)
    if causal:
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)[None, None]
    if padding is not None:
        mask = mask & padding.bool()[:, None, None, :]
    return mask | ~mask.any(dim=-1, keepdim=True)


class Attention(nn.Module):
    """Multi-head (optionally grouped-query) attention; `fused_qkv` keeps one `qkv` projection
    (open_clip / nanoGPT layout), otherwise `q`, `k`, `v` (HF layout). Cross-attention via `context`."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int | None = None, head_dim: int | None = None,
                 qkv_bias: bool = True, out_bias: bool = True, fused_qkv: bool = False):
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads or n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        self.head_dim = head_dim or dim // n_heads
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, q_dim + 2 * kv_dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, q_dim, bias=qkv_bias)
            self.k = nn.Linear(dim, kv_dim, bias=qkv_bias)
            self.v = nn.Linear(dim, kv_dim, bias=qkv_bias)
        self.out = nn.Linear(q_dim, dim, bias=out_bias)

    def project(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """x [B, T, dim] (and context [B, S, dim]) -> q [B, H, T, D], k, v [B, H_kv, S, D]."""
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        source = x if context is None else context
        if self.fused_qkv and context is None:  # self-attention: one GEMM for q, k and v
            q, k, v = self.qkv(x).split([q_dim, kv_dim, kv_dim], dim=-1)
        elif self.fused_qkv:
            w, b = self.qkv.weight, self.qkv.bias
            wq, wkv = w.split([q_dim, 2 * kv_dim])
            bq, bkv = b.split([q_dim, 2 * kv_dim]) if b is not None else (None, None)
            q = F.linear(x, wq, bq)
            k, v = F.linear(source, wkv, bkv).split([kv_dim, kv_dim], dim=-1)
        else:
            q, k, v = self.q(x), self.k(source), self.v(source)
        heads = lambda t, n: t.unflatten(-1, (n, self.head_dim)).transpose(1, 2)  # noqa: E731
        return heads(q, self.n_heads), heads(k, self.n_kv_heads), heads(v, self.n_kv_heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, cache: KVCache | None = None,
                layer: int = 0, context: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, dim] -> [B, T, dim]. `mask` is boolean/additive [B|1, 1, T, S]; `is_causal` is the
        fast path for causal attention without a mask or cache; `rope` = (cos, sin) for these positions."""
        q, k, v = self.project(x, context)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        if self.n_kv_heads != self.n_heads:
            repeat = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        causal = is_causal and mask is None and q.shape[2] == k.shape[2]
        if is_causal and not causal and mask is None:
            mask = attention_mask(None, q.shape[2], k.shape[2], causal=True, device=x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.out(y.transpose(1, 2).flatten(2))
