"""Llama-family causal language model (Llama 2/3, SmolLM2, Qwen2, Mistral layouts) on Sensorium's nn/
blocks: RoPE, grouped-query attention, RMSNorm, SwiGLU, tied or untied embeddings, KV-cache greedy decoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sensorium.nn import KVCache, RMSNorm, RotaryEmbedding, Transformer, TransformerConfig, attention_mask


@dataclass
class LlamaConfig:
    """Shape and options of a Llama-family decoder."""

    vocab_size: int = 32000
    dim: int = 2048
    depth: int = 16
    n_heads: int = 32
    n_kv_heads: int | None = None
    head_dim: int | None = None
    mlp_hidden: int = 8192
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    max_positions: int = 2048
    tie_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2: True
    out_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = 1
    eos_token_ids: list[int] = field(default_factory=lambda: [2])
    pad_token_id: int | None = None

    def transformer(self) -> TransformerConfig:
        """The block stack's config."""
        return TransformerConfig(dim=self.dim, depth=self.depth, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
                                 head_dim=self.head_dim, mlp_hidden=self.mlp_hidden, activation="swiglu",
                                 norm="rmsnorm", norm_eps=self.norm_eps, qkv_bias=self.qkv_bias,
                                 out_bias=self.out_bias, mlp_bias=self.mlp_bias)


def positions_from_padding(padding: torch.Tensor) -> torch.Tensor:
    """Position ids [B, L] that skip left padding: real tokens count 0, 1, ...; pads get 1 (as HF does)."""
    pos = padding.long().cumsum(-1) - 1
    return pos.masked_fill(~padding.bool(), 1)


class LlamaLM(nn.Module):
    """Token ids (or input embeddings) -> next-token logits; `generate` decodes greedily with a KV cache."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        t = cfg.transformer()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.transformer = Transformer(t)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.rope = RotaryEmbedding(t.head_dim or cfg.dim // cfg.n_heads, cfg.rope_theta, cfg.rope_scaling)

    def hidden(self, ids: torch.Tensor | None = None, padding: torch.Tensor | None = None,
               cache: KVCache | None = None, embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Final-normed hidden states [B, T, dim]. `padding` [B, past + T] is True on real tokens
        (covering cached positions too); `embeds` replaces `ids` (e.g. image tokens spliced in)."""
        x = self.embed(ids) if embeds is None else embeds
        batch, length = x.shape[:2]
        past = len(cache) if cache is not None else 0
        if padding is not None and bool(padding.all()):
            padding = None  # no padding: the causal fast path
        if padding is None:
            positions = torch.arange(past, past + length, device=x.device).expand(batch, -1)
            mask = None
        else:
            positions = positions_from_padding(padding)[:, -length:]
            mask = attention_mask(padding, length, past + length, causal=True)
        rope = self.rope(positions, dtype=x.dtype)
        x = self.transformer(x, mask=mask, is_causal=mask is None, rope=rope, cache=cache)
        return self.norm(x)

    def forward(self, ids: torch.Tensor | None = None, padding: torch.Tensor | None = None,
                cache: KVCache | None = None, embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] (float32 math is the caller's choice of dtype)."""
        return self.lm_head(self.hidden(ids, padding, cache, embeds))

    @torch.inference_mode()
    def generate(self, ids: torch.Tensor, max_new_tokens: int = 32, padding: torch.Tensor | None = None,
                 eos_token_ids: list[int] | None = None, pad_token_id: int | None = None) -> torch.Tensor:
        """Greedy decoding: prompt ids [B, L] (left-padded when batched) -> [B, L + new]. Rows that
        emitted an EOS token continue with the pad token; decoding stops when every row has finished."""
        eos = torch.tensor(self.cfg.eos_token_ids if eos_token_ids is None else eos_token_ids, device=ids.device)
        pad = pad_token_id if pad_token_id is not None else self.cfg.pad_token_id
        pad = pad if pad is not None else (int(eos[0]) if eos.numel() else 0)
        padding = torch.ones_like(ids, dtype=torch.bool) if padding is None else padding.bool()
        cache, out = KVCache(), ids
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        logits = self(ids, padding=padding, cache=cache)
        for _ in range(max_new_tokens):
            token = logits[:, -1].argmax(-1)
            token = torch.where(done, torch.full_like(token, pad), token)
            out = torch.cat([out, token[:, None]], dim=1)
            done = done | torch.isin(token, eos)
            if done.all():
                break
            padding = torch.cat([padding, torch.ones_like(padding[:, :1])], dim=1)
            logits = self(token[:, None], padding=padding, cache=cache)
        return out
