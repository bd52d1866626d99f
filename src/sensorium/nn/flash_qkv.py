"""Self-attention straight from a packed QKV projection, with FlashAttention-4 kernels (CuTe DSL) on Hopper
and Blackwell GPUs.

The SDPA path splits qkv [B, T, 3·H·D] into q, k, v, attends, and in the backward concatenates dq, dk, dv back
into one [B, T, 3·H·D] gradient: a full extra pass over it in every layer. FlashAttention takes the [B, T, H, D]
layout with any row stride, so here q, k and v are strided views of the projection's output, and the backward
writes dq, dk and dv into the three slots of one buffer: no split, no transpose, no concatenation. The kernels
come from the optional `flash-attn-4` package (`pip install 'sensorium[fa4]'`) and are wrapped as custom ops,
opaque to torch.compile. On CPU, or without the package, the same ops run as PyTorch math (float32 softmax).

Each FA4 call spends ~0.3 ms on the host (CuTe DSL dispatch), more than a ViT-B layer's attention takes on an H100:
capture the step in CUDA graphs (FastConfig.compile_mode="reduce-overhead") or the GPU waits for the host."""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from types import ModuleType

import torch


@lru_cache(maxsize=1)
def _fa4() -> ModuleType | None:
    """flash_attn.cute.interface, or None when flash-attn-4 (or its CuTe DSL) is not installed."""
    try:
        from flash_attn.cute import interface
    except ImportError:
        return None
    return interface


def fa4_available(device: torch.device | str | None = None) -> bool:
    """Whether FlashAttention-4 kernels can run on `device` (CUDA, compute capability 9.x or 10.x, package
    installed)."""
    device = torch.device(device if device is not None else "cuda")
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] in (9, 10) and _fa4() is not None


def _usable(*tensors: torch.Tensor) -> bool:
    """FA4 kernels for these tensors; on CUDA without them, warn (once) that the slow math path runs instead."""
    if not all(t.is_cuda and t.dtype in (torch.bfloat16, torch.float16) for t in tensors):
        return False
    if fa4_available(tensors[0].device):
        return True
    warnings.warn("packed-QKV attention on CUDA without FlashAttention-4 kernels (pip install 'sensorium[fa4]'; "
                  "compute capability 9.x/10.x): running PyTorch math, with [B, H, T, T] float32 scores",
                  RuntimeWarning, stacklevel=3)
    return False


def _heads(qkv: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Strided [B, T, H, D] views of q, k, v in qkv [B, T, 3·H·D]."""
    b, t, width = qkv.shape
    return qkv.view(b, t, 3, n_heads, width // (3 * n_heads)).unbind(2)


def _scores(q: torch.Tensor, k: torch.Tensor, causal: bool) -> torch.Tensor:
    """float32 scaled scores [B, H, T, T] of [B, T, H, D] q and k, -inf above the diagonal when causal."""
    s = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) / math.sqrt(q.shape[-1])
    if causal:
        t = q.shape[1]
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return s


FORWARD_KERNELS = ("fa4", "cudnn")


@torch.library.custom_op("sensorium::flash_qkv_fwd", mutates_args=())
def flash_qkv_fwd(qkv: torch.Tensor, n_heads: int, causal: bool, forward: str = "fa4"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, T, H·D], logsumexp [B, H, T] float32) of softmax(q k^T / sqrt(D)) v for qkv [B, T, 3·H·D], by
    the FA4 forward kernel or by cuDNN's (`forward="cudnn"`, faster at a few hundred tokens on an H100); either
    feeds the FA4 backward."""
    q, k, v = _heads(qkv, n_heads)
    b, t, h, d = q.shape
    if not _usable(qkv):
        s = _scores(q, k, causal)
        lse = s.logsumexp(-1)
        out = torch.einsum("bhts,bshd->bthd", (s - lse[..., None]).exp(), v.float())
        return out.to(qkv.dtype).reshape(b, t, h * d), lse
    if forward == "cudnn":  # [B, H, T, D] views; cuDNN lays its output out like q: [B, T, H, D] in memory
        o, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True, 0.0, causal, False)[:2]
        return o.transpose(1, 2).reshape(b, t, h * d), lse.reshape(b, h, t).contiguous()
    out, lse = _fa4()._flash_attn_fwd(q, k, v, causal=causal, return_lse=True)[:2]
    return out.view(b, t, h * d), lse


@flash_qkv_fwd.register_fake
def _(qkv: torch.Tensor, n_heads: int, causal: bool, forward: str = "fa4") -> tuple[torch.Tensor, torch.Tensor]:
    b, t, width = qkv.shape
    return qkv.new_empty(b, t, width // 3), qkv.new_empty(b, n_heads, t, dtype=torch.float32)


@torch.library.custom_op("sensorium::flash_qkv_bwd", mutates_args=())
def flash_qkv_bwd(grad: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, n_heads: int,
                  causal: bool) -> torch.Tensor:
    """d loss / d qkv [B, T, 3·H·D] from d loss / d out [B, T, H·D]: dq, dk, dv written into one buffer."""
    q, k, v = _heads(qkv, n_heads)
    b, t, h, d = q.shape
    if not _usable(qkv, grad):
        do, o = grad.float().view(b, t, h, d), out.float().view(b, t, h, d)
        p = (_scores(q, k, causal) - lse[..., None]).exp()  # [B, H, T, S]
        dv = torch.einsum("bhts,bthd->bshd", p, do)
        dp = torch.einsum("bthd,bshd->bhts", do, v.float())
        ds = p * (dp - (do * o).sum(-1).transpose(1, 2)[..., None]) / math.sqrt(d)
        dq = torch.einsum("bhts,bshd->bthd", ds, k.float())
        dk = torch.einsum("bhts,bthd->bshd", ds, q.float())
        return torch.stack([dq, dk, dv], dim=2).to(qkv.dtype).reshape(qkv.shape)
    dqkv = torch.empty_like(qkv)
    dq, dk, dv = _heads(dqkv, n_heads)
    _fa4()._flash_attn_bwd(q, k, v, out.view(b, t, h, d), grad.contiguous().view(b, t, h, d), lse, causal=causal,
                           dq=dq, dk=dk, dv=dv)
    return dqkv


@flash_qkv_bwd.register_fake
def _(grad: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, n_heads: int,
      causal: bool) -> torch.Tensor:
    return torch.empty_like(qkv)


def _setup_context(ctx, inputs, output) -> None:
    qkv, n_heads, causal, _forward = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse)
    ctx.n_heads, ctx.causal = n_heads, causal
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out: torch.Tensor, _grad_lse: torch.Tensor | None):
    qkv, out, lse = ctx.saved_tensors
    return flash_qkv_bwd(grad_out, qkv, out, lse, ctx.n_heads, ctx.causal), None, None, None


torch.library.register_autograd("sensorium::flash_qkv_fwd", _backward, setup_context=_setup_context)


def flash_attention_qkv(qkv: torch.Tensor, n_heads: int, causal: bool = False, forward: str = "fa4"
                        ) -> torch.Tensor:
    """Multi-head self-attention of a packed projection qkv [B, T, 3·H·D] (q, k, v blocks, heads within each)
    -> [B, T, H·D], ready for the output projection; `forward` picks the forward kernel (FORWARD_KERNELS), the
    backward is FA4's."""
    if qkv.dim() != 3 or qkv.shape[-1] % (3 * n_heads):
        raise ValueError(f"qkv must be [B, T, 3*H*D] with H={n_heads}; got {tuple(qkv.shape)}")
    if forward not in FORWARD_KERNELS:
        raise ValueError(f"forward={forward!r}; expected one of {', '.join(FORWARD_KERNELS)}")
    return flash_qkv_fwd(qkv, n_heads, causal, forward)[0]
