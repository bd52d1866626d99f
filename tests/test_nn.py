"""Building blocks: attention against a plain softmax reference, fused == separate QKV, GQA,
masks without NaN, and KV-cache decoding equal to a full causal pass."""

from __future__ import annotations

import math

import torch

from sensorium.nn import Attention, KVCache, RotaryEmbedding, Transformer, TransformerConfig, attention_mask


def _reference(attn: Attention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    q, k, v = attn.project(x)
    rep = attn.n_heads // attn.n_kv_heads
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return attn.out((scores.softmax(-1) @ v).transpose(1, 2).flatten(2))


def test_attention_matches_softmax_reference_with_gqa_and_padding():
    torch.manual_seed(0)
    attn = Attention(32, n_heads=4, n_kv_heads=2)
    x = torch.randn(2, 5, 32)
    padding = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    mask = attention_mask(padding, 5, 5, causal=True)
    assert torch.allclose(attn(x, mask=mask), _reference(attn, x, mask), atol=1e-5)
    assert torch.allclose(attn(x, is_causal=True), _reference(attn, x, attention_mask(None, 5, 5, True)), atol=1e-5)


def test_fused_qkv_equals_separate_projections():
    torch.manual_seed(0)
    sep, fused = Attention(16, 2), Attention(16, 2, fused_qkv=True)
    with torch.no_grad():
        fused.qkv.weight.copy_(torch.cat([sep.q.weight, sep.k.weight, sep.v.weight]))
        fused.qkv.bias.copy_(torch.cat([sep.q.bias, sep.k.bias, sep.v.bias]))
        fused.out.load_state_dict(sep.out.state_dict())
    x = torch.randn(3, 4, 16)
    assert torch.allclose(sep(x), fused(x), atol=1e-6)


def test_fully_masked_rows_are_finite():
    padding = torch.tensor([[0, 0, 1, 1]], dtype=torch.bool)  # left padding
    attn = Attention(8, 2)
    out = attn(torch.randn(1, 4, 8), mask=attention_mask(padding, 4, 4, causal=True))
    assert torch.isfinite(out).all()


def test_kv_cache_decoding_equals_full_pass():
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=32, depth=2, n_heads=4, n_kv_heads=1, mlp_hidden=64, activation="swiglu",
                            norm="rmsnorm", qkv_bias=False, out_bias=False, mlp_bias=False)
    model, rope = Transformer(cfg).eval(), RotaryEmbedding(8)
    x = torch.randn(1, 6, 32)
    full = model(x, is_causal=True, rope=rope(torch.arange(6)[None]))
    cache = KVCache()
    steps = [model(x[:, :4], is_causal=True, rope=rope(torch.arange(4)[None]), cache=cache)]
    for t in (4, 5):
        steps.append(model(x[:, t:t + 1], is_causal=True, rope=rope(torch.tensor([[t]])), cache=cache))
    assert len(cache) == 6
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
