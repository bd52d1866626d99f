"""Packed-QKV self-attention (nn/flash_qkv.py): the custom ops' math path against SDPA, their autograd and
torch.compile wiring, the `attention="fa4"` patch of the fast step, and on a GPU with flash-attn-4 the
FlashAttention-4 kernels against cuDNN's SDPA."""

import pytest
import torch
import torch.nn.functional as F
from _fast import tiny_losses

from sensorium.nn import Attention
from sensorium.nn.flash_qkv import fa4_available, flash_attention_qkv
from sensorium.train.fast import FastConfig, packed_attention


def _sdpa(qkv: torch.Tensor, n_heads: int, causal: bool) -> torch.Tensor:
    q, k, v = (t.unflatten(-1, (n_heads, -1)).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).flatten(2)


def _out_and_grad(fn, qkv: torch.Tensor, grad: torch.Tensor, n_heads: int, causal: bool):
    x = qkv.detach().clone().requires_grad_()
    out = fn(x, n_heads, causal)
    (out * grad).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("causal", [False, True])
def test_packed_attention_equals_sdpa_with_its_gradient(causal):
    torch.manual_seed(0)
    qkv, grad = torch.randn(2, 9, 3 * 4 * 8), torch.randn(2, 9, 4 * 8)
    out, dqkv = _out_and_grad(flash_attention_qkv, qkv, grad, 4, causal)
    ref_out, ref_dqkv = _out_and_grad(_sdpa, qkv, grad, 4, causal)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dqkv, ref_dqkv, rtol=1e-5, atol=1e-5)
    compiled = torch.compile(flash_attention_qkv, backend="aot_eager", fullgraph=True)
    out_c, dqkv_c = _out_and_grad(compiled, qkv, grad, 4, causal)
    torch.testing.assert_close(dqkv_c, ref_dqkv, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"3\*H\*D"):
        flash_attention_qkv(torch.randn(2, 9, 20), 4)
    with pytest.raises(ValueError, match="forward='flash'"):
        flash_attention_qkv(qkv, 4, forward="flash")


def test_patch_takes_fused_self_attention_only_and_the_step_trains():
    fused, separate, grouped = Attention(32, 4, fused_qkv=True), Attention(32, 4), Attention(32, 4, 2, fused_qkv=True)
    assert packed_attention(fused) and not packed_attention(separate) and not packed_attention(grouped)
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 3, 32)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    reference = Attention(32, 4, fused_qkv=True)
    reference.load_state_dict(fused.state_dict())
    for kwargs in ({}, {"is_causal": True}, {"mask": mask}, {"context": ctx}):  # masks and context: SDPA path
        torch.testing.assert_close(fused(x, **kwargs), reference(x, **kwargs), rtol=1e-5, atol=1e-5)

    losses = {a: tiny_losses(FastConfig(bf16=False, attention=a), steps=3) for a in ("auto", "fa4", "cudnn+fa4")}
    assert losses["fa4"] == pytest.approx(losses["auto"], rel=1e-5)
    assert losses["cudnn+fa4"] == pytest.approx(losses["auto"], rel=1e-5)
    assert losses["fa4"][2] < losses["fa4"][0]


@pytest.mark.gpu
@pytest.mark.skipif(not fa4_available(), reason="needs flash-attn-4 and a compute capability 9.x/10.x GPU")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("forward", ["fa4", "cudnn"])
def test_cuda_fa4_kernels_match_cudnn_sdpa_in_bf16(causal, forward):
    """The FlashAttention-4 backward (dq, dk, dv written into one packed buffer), after FA4's forward or cuDNN's,
    gives cuDNN SDPA's output and gradient to bf16 accuracy: relative error of each <= 1%."""
    torch.manual_seed(0)
    qkv = torch.randn(16, 197, 3 * 12 * 64, device="cuda", dtype=torch.bfloat16)
    grad = torch.randn(16, 197, 12 * 64, device="cuda", dtype=torch.bfloat16)
    out, dqkv = _out_and_grad(lambda x, h, c: flash_attention_qkv(x, h, c, forward), qkv, grad, 12, causal)
    ref_out, ref_dqkv = _out_and_grad(_sdpa, qkv, grad, 12, causal)
    rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()  # noqa: E731
    assert rel(out, ref_out) <= 1e-2 and rel(dqkv, ref_dqkv) <= 1e-2
