"""How much a GELU fused into the GEMM epilogue could save in a ViT MLP: times, on one GPU, the fc1 GEMM
(bias in the epilogue) followed by a separate GELU (erf and tanh), against cuBLASLt's GEMM with the GELU in its
epilogue (`torch._addmm_activation`, tanh-GELU), and the backward pieces that a DGELU/BGRAD epilogue would fold
away (fc2's input-gradient GEMM, then gelu_backward and the fc1 bias-gradient sum).

    PYTHONPATH=src python3 bench/mlp_epilogue.py --out OUT        # ViT-B-16 and ViT-L-14 vision MLP shapes

OUT/mlp_epilogue.json names the device. Timings are CUDA-event medians over --reps calls.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402
from _timing import cuda_median_ms  # noqa: E402
from train_throughput import device_info  # noqa: E402

SHAPES = {"ViT-B-16": (256 * 197, 768, 3072), "ViT-L-14": (128 * 257, 1024, 4096)}  # tokens, width, hidden


def mlp_operands(tokens: int, width: int, hidden: int) -> tuple[torch.Tensor, ...]:
    """Seeded bf16 CUDA operands of one MLP: x, fc1 weight and bias, fc2 weight, the output gradient and fc1's
    pre-activation."""
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = dict(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(tokens, width, generator=g, **bf)
    w1, b1 = torch.randn(hidden, width, generator=g, **bf) * width**-0.5, torch.randn(hidden, generator=g, **bf)
    w2 = torch.randn(width, hidden, generator=g, **bf) * hidden**-0.5
    dout = torch.randn(tokens, width, generator=g, **bf)
    return x, w1, b1, w2, dout, torch.addmm(b1, x, w1.t())


def measure(tokens: int, width: int, hidden: int, reps: int) -> dict[str, dict[str, float]]:
    """Milliseconds of each piece for one MLP of this shape in bf16, and the tanh epilogue's deviation."""
    x, w1, b1, w2, dout, pre = mlp_operands(tokens, width, hidden)
    dact = dout @ w2
    ms = {
        "fc1 GEMM + bias": cuda_median_ms(lambda: torch.addmm(b1, x, w1.t()), reps),
        "GELU erf (separate kernel)": cuda_median_ms(lambda: F.gelu(pre), reps),
        "GELU tanh (separate kernel)": cuda_median_ms(lambda: F.gelu(pre, approximate="tanh"), reps),
        "fc1 GEMM + bias + tanh-GELU epilogue (cuBLASLt)":
            cuda_median_ms(lambda: torch._addmm_activation(b1, x, w1.t(), use_gelu=True), reps),
        "fc2 input-gradient GEMM": cuda_median_ms(lambda: dout @ w2, reps),
        "gelu_backward erf (separate kernel)": cuda_median_ms(lambda: torch.ops.aten.gelu_backward(dact, pre), reps),
        "fc1 bias gradient (column sum)": cuda_median_ms(lambda: dact.sum(0), reps),
    }
    fused = torch._addmm_activation(b1, x, w1.t(), use_gelu=True).float()
    other = {"max |tanh-epilogue - erf GELU|": (fused - F.gelu(pre.float())).abs().max().item(),
             "bf16 spacing at the largest |GELU|": (torch.finfo(torch.bfloat16).eps * fused.abs().max()).item(),
             "fc1 TFLOP/s": 2 * tokens * width * hidden / ms["fc1 GEMM + bias"] / 1e9}
    return {"ms": ms, "other": other}


def main(argv: list[str] | None = None) -> int:
    """Measure every shape; write OUT/mlp_epilogue.json."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--reps", type=int, default=50)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("mlp_epilogue: needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    doc = {"machine": machine(), "device": device_info(device), "torch": torch.__version__, "shapes": {}}
    for name, shape in SHAPES.items():
        doc["shapes"][name] = {"tokens_width_hidden": shape, **measure(*shape, args.reps)}
        print(name, json.dumps(doc["shapes"][name], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mlp_epilogue.json").write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
