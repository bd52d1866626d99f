"""Self-attention of a packed QKV projection, forward and backward, at the contrastive towers' shapes: SDPA (as
`nn.Attention` calls it: split, transpose, SDPA, and the gradient's concatenation) against FlashAttention-4 on the
packed projection (`nn.flash_qkv`), and cuDNN's forward with FA4's backward on the packed projection.

    PYTHONPATH=src python3 bench/attention_kernels.py --out OUT            # GPU (H100/H200/B200)

Each variant is checked against float32 math on fresh random inputs (relative error of the output and of the
qkv gradient), then timed with CUDA events: median of --reps calls after --warmup. Writes OUT/attention_kernels.json
naming the device.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402
from _timing import cuda_median_ms, kernel_ms  # noqa: E402
from sensorium.nn.flash_qkv import fa4_available, flash_attention_qkv, flash_qkv_bwd, flash_qkv_fwd  # noqa: E402

# (name, batch, tokens, heads, head_dim, causal): ViT-B-16's vision and text towers at batch 256
SHAPES = (("vit-b-16 vision", 256, 197, 12, 64, False), ("vit-b-16 text", 256, 77, 8, 64, True),
          ("vit-l-14 vision", 128, 257, 16, 64, False))


def sdpa_packed(qkv: torch.Tensor, n_heads: int, causal: bool) -> torch.Tensor:
    """nn.Attention's fused-QKV path: split, heads to dim 1, SDPA, back to [B, T, H*D]."""
    q, k, v = (t.unflatten(-1, (n_heads, -1)).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).flatten(2)


def reference(qkv: torch.Tensor, grad: torch.Tensor, n_heads: int, causal: bool) -> tuple[torch.Tensor, ...]:
    """float32 math: output and qkv gradient."""
    x = qkv.float()
    out, lse = flash_qkv_fwd(x, n_heads, causal)  # not CUDA-bf16: the op's math path
    return out, flash_qkv_bwd(grad.float(), x, out, lse, n_heads, causal)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def variants() -> dict[str, Callable[[torch.Tensor, int, bool], torch.Tensor]]:
    out: dict[str, Callable[[torch.Tensor, int, bool], torch.Tensor]] = {"sdpa (auto: cuDNN)": sdpa_packed}
    if fa4_available():
        out["fa4 packed (nn.flash_qkv)"] = flash_attention_qkv
        out["cudnn fwd + fa4 bwd, packed"] = lambda qkv, h, causal: flash_attention_qkv(qkv, h, causal, "cudnn")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"machine": machine(), "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                           "fa4": fa4_available(), "rows": []}
    fns = variants()
    for shape in SHAPES:
        name, b, t, h, d, causal = shape
        flops_fwd = 4 * b * h * t * t * d / (2 if causal else 1)
        for vname, fn in fns.items():
            row: dict[str, Any] = {"shape": name, "batch": b, "tokens": t, "heads": h, "head_dim": d,
                                   "causal": causal, "variant": vname}
            try:
                errors = []
                for seed in range(2):  # fresh inputs each check
                    torch.manual_seed(seed)
                    qkv = torch.randn(b, t, 3 * h * d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                    grad = torch.randn(b, t, h * d, device="cuda", dtype=torch.bfloat16)
                    out = fn(qkv, h, causal)
                    (dqkv,) = torch.autograd.grad(out, qkv, grad)
                    ref_out, ref_dqkv = reference(qkv.detach(), grad, h, causal)
                    errors.append((rel(out, ref_out), rel(dqkv, ref_dqkv), bool(torch.isfinite(dqkv).all())))
                row["rel_err_out"] = max(e[0] for e in errors)
                row["rel_err_dqkv"] = max(e[1] for e in errors)
                row["finite"] = all(e[2] for e in errors)
                qkv = torch.randn(b, t, 3 * h * d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                grad = torch.randn(b, t, h * d, device="cuda", dtype=torch.bfloat16)
                with torch.no_grad():
                    row["fwd_ms"] = cuda_median_ms(lambda: fn(qkv, h, causal), args.reps, args.warmup)
                row["fwd_bwd_ms"] = cuda_median_ms(lambda: torch.autograd.grad(fn(qkv, h, causal), qkv, grad),
                                                   args.reps, args.warmup)
                row["fwd_bwd_kernel_ms"], row["kernels"] = kernel_ms(
                    lambda: torch.autograd.grad(fn(qkv, h, causal), qkv, grad), args.reps)
                row["fwd_tflops"] = flops_fwd / row["fwd_ms"] / 1e9
                row["fwd_bwd_tflops"] = 3.5 * flops_fwd / row["fwd_bwd_ms"] / 1e9  # bwd = 2.5x fwd (recompute)
                row["status"] = "ok"
                print(f"{name:16s} {vname:40s} fwd {row['fwd_ms']:.3f} ms, fwd+bwd {row['fwd_bwd_ms']:.3f} ms "
                      f"(kernels {row['fwd_bwd_kernel_ms']:.3f}), "
                      f"err out {row['rel_err_out']:.1e} dqkv {row['rel_err_dqkv']:.1e}", flush=True)
            except Exception as err:  # noqa: BLE001 - one failing variant must not lose the rest
                row.update(status="error", error=f"{type(err).__name__}: {err}"[:2000],
                           traceback=traceback.format_exc(limit=-8)[-4000:])
                print(f"{name:16s} {vname:40s} ERROR {row['error'][:300]}", flush=True)
            doc["rows"].append(row)
            (args.out / "attention_kernels.json").write_text(json.dumps(doc, indent=1))
    return 0 if all(r["status"] == "ok" for r in doc["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
