"""Building blocks: attention against a plain softmax reference, fused == separate QKV, GQA,
masks without NaN, KV-cache decoding equal to a full causal pass, and a last block pruned to the pooled rows
equal to the full one."""

from __future__ import annotations

import math

import pytest
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


def _pruned_and_full(cfg, inputs, encode):
    """Embeddings and parameter gradients of a DualEncoder with and without `prune_last_block`."""
    import copy

    from sensorium.models.dual_encoder import DualEncoder

    torch.manual_seed(0)
    model = DualEncoder(cfg).double()
    for p in model.parameters():  # the zero-initialised embeddings would hide position mistakes
        torch.nn.init.normal_(p, std=0.2)
    out = []
    for prune in (True, False):
        m = copy.deepcopy(model)
        m.cfg.vision.prune_last_block = m.cfg.text.prune_last_block = prune
        z = encode(m, *inputs)
        (z * torch.linspace(-1, 1, z.numel(), dtype=z.dtype).view_as(z)).sum().backward()
        out.append((z, {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    return out


def test_pruned_last_block_gives_the_full_models_embeddings_and_gradients():
    """Computing only the pooled rows in the last block changes nothing: class-token images, EOS / argmax / last
    text pooling, causal or not, with and without a padding mask."""
    from sensorium.models.dual_encoder import DualEncoderConfig, TextConfig, VisionConfig

    tc = TransformerConfig(dim=32, depth=2, n_heads=4, mlp_hidden=64, fused_qkv=True)
    pixels = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    ids = torch.tensor([[5, 9, 99, 0, 0, 0], [7, 3, 4, 8, 99, 0], [2, 99, 1, 1, 1, 1]])
    padding = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]).bool()
    cases = [("eos", True, True, padding), ("argmax", True, False, None), ("last", False, True, padding),
             ("eos", True, True, None)]
    for pool, causal, mask_padding, pad in cases:
        cfg = DualEncoderConfig(vision=VisionConfig(image_size=16, patch_size=8, transformer=tc, proj_dim=16),
                                text=TextConfig(vocab_size=100, context_length=6, transformer=tc, causal=causal,
                                                mask_padding=mask_padding, pool=pool, eos_token_id=99,
                                                proj_dim=16))
        (zp, gp), (zf, gf) = _pruned_and_full(cfg, (ids, pad), lambda m, i, p: m.encode_text(i, p))
        torch.testing.assert_close(zp, zf, msg=f"text pool {pool} causal {causal} padding {pad is not None}")
        assert gp.keys() == gf.keys() and any("text.transformer.blocks.1" in n for n in gp)
        for name in gp:
            torch.testing.assert_close(gp[name], gf[name], msg=name)
    (zp, gp), (zf, gf) = _pruned_and_full(cfg, (pixels,), lambda m, x: m.encode_image(x))
    torch.testing.assert_close(zp, zf)
    assert gp.keys() == gf.keys() and "vision.transformer.blocks.1.mlp.fc1.weight" in gp
    for name in gp:
        torch.testing.assert_close(gp[name], gf[name], msg=name)


def test_pruned_transformer_rejects_what_it_cannot_prune():
    t = Transformer(TransformerConfig(dim=16, depth=1, n_heads=2, mlp_hidden=32))
    with pytest.raises(ValueError, match="does not combine"):
        t(torch.randn(1, 4, 16), keep=torch.zeros(1, 1, dtype=torch.long), groups=0)
