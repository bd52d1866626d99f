"""The GELU MLP's GEMM-epilogue kernels side by side on one GPU: cuBLASLt (tanh-GELU) against quack's CuTe DSL
GEMMs (erf and tanh GELU), per piece (fc1 with bias + GELU + saved pre-activation; fc2's input gradient with the
GELU gradient and fc1's bias gradient) and for the whole MLP forward + backward (`nn.fused_mlp.gelu_mlp`), with
PyTorch's eager MLP as the reference. Also the relative error of each MLP's output and gradients against float32
erf-GELU math.

    PYTHONPATH=src python3 bench/mlp_kernels.py --out OUT          # ViT-B-16 vision and text, ViT-L-14 vision

OUT/mlp_kernels.json names the device. The pieces are GPU kernel time under torch.profiler (no host time:
inside CUDA graphs the host's launch work is gone); the whole MLP is CUDA-event medians over --reps calls, host
included. Warm-up calls come first (quack autotunes and compiles there).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402
from _timing import cuda_median_ms, kernel_ms  # noqa: E402
from mlp_epilogue import mlp_operands  # noqa: E402
from sensorium.nn.fused_mlp import (gelu_mlp, linear_gelu_aux, matmul_dgelu, quack_available,  # noqa: E402
                                    quack_linear_gelu, quack_matmul_dgelu)
from train_throughput import device_info  # noqa: E402

SHAPES = {"ViT-B-16 vision": (256 * 197, 768, 3072), "ViT-B-16 text": (256 * 77, 512, 2048),
          "ViT-L-14 vision": (128 * 257, 1024, 4096)}  # tokens, width, hidden
MLPS = {"cublaslt (tanh)": ("cublaslt", "tanh"), "quack (erf)": ("quack", "none")}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def pieces(tokens: int, width: int, hidden: int, reps: int) -> dict[str, float | str]:
    """GPU kernel milliseconds (torch.profiler, no host time) of fc1 (+ GELU epilogue) and of fc2's input
    gradient (+ GELU-gradient epilogue, + fc1 bias gradient) per kernel library, with the plain GEMMs as the
    floor."""
    x, w1, b1, w2, grad, pre = mlp_operands(tokens, width, hidden)
    calls: dict[str, Callable[[], object]] = {
        "fc1 GEMM + bias (torch, the floor)": lambda: torch.addmm(b1, x, w1.t()),
        "fc1 + tanh-GELU epilogue (cuBLASLt)": lambda: linear_gelu_aux(x, w1, b1),
        "fc2 input-gradient GEMM (torch, the floor)": lambda: grad @ w2,
        "fc2 input gradient + DGELU epilogue, + bias column sum (cuBLASLt)": lambda: matmul_dgelu(grad, w2, pre)}
    if quack_available():
        for approximate, name in (("none", "erf"), ("tanh", "tanh")):
            calls[f"fc1 + {name}-GELU epilogue (quack)"] = lambda a=approximate: quack_linear_gelu(x, w1, b1, a)
            calls[f"fc2 input gradient + d{name}-GELU + bias-gradient epilogue (quack)"] = \
                lambda a=approximate: quack_matmul_dgelu(grad, w2, pre, a)
    out: dict[str, float | str] = {}
    for name, fn in calls.items():
        try:
            out[name] = kernel_ms(fn, reps)[0]
        except Exception as err:  # a kernel library that fails here is reported, the others still run
            traceback.print_exc()
            out[name] = f"failed: {type(err).__name__}: {err}"[:300]
    return out


def whole_mlp(tokens: int, width: int, hidden: int, reps: int) -> dict[str, dict[str, float | str]]:
    """Forward + backward of the MLP per kernel library: milliseconds, and relative errors of the output and the
    input, fc1-weight and fc1-bias gradients against the float32 erf-GELU MLP."""
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(width, hidden, device="cuda"), torch.nn.Linear(hidden, width, device="cuda")
    x = torch.randn(tokens, width, device="cuda")
    grad = torch.randn(tokens, width, device="cuda")

    def reference() -> tuple[torch.Tensor, ...]:
        x.grad = fc1.weight.grad = fc1.bias.grad = None
        y = fc2(F.gelu(fc1(x.requires_grad_())))
        y.backward(grad)
        return y.detach(), x.grad, fc1.weight.grad, fc1.bias.grad

    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # a float32 reference, not TF32
    try:
        want = reference()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    runs: dict[str, Callable[[], torch.Tensor]] = {"torch eager (erf)": lambda: fc2(F.gelu(fc1(x)))}
    for name, (kernels, approximate) in MLPS.items():
        if kernels == "quack" and not quack_available():
            continue
        runs[name] = lambda k=kernels, a=approximate: gelu_mlp(x, fc1, fc2, k, a)
    out: dict[str, dict[str, float | str]] = {}
    for name, run in runs.items():
        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = run()
            y.backward(grad.bfloat16())

        try:
            x.requires_grad_()
            x.grad = fc1.weight.grad = fc1.bias.grad = None
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = run()
            y.float().backward(grad)
            errors = {f"rel err {what}": _rel(got, ref) for what, got, ref in
                      zip(("out", "x grad", "fc1 weight grad", "fc1 bias grad"),
                          (y.detach(), x.grad, fc1.weight.grad, fc1.bias.grad), want)}
            out[name] = {"fwd+bwd ms, host included": cuda_median_ms(step, reps),
                         "fwd+bwd kernel ms": kernel_ms(step, reps)[0], **errors}
        except Exception as err:
            traceback.print_exc()
            out[name] = {"error": f"{type(err).__name__}: {err}"[:300]}
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure every shape; write OUT/mlp_kernels.json."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma list of " + ", ".join(SHAPES))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("mlp_kernels: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    doc = {"machine": machine(), "device": device_info(torch.device("cuda")), "torch": torch.__version__,
           "quack_available": quack_available(), "shapes": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in filter(None, args.shapes.split(",")):
        shape = SHAPES[name]
        doc["shapes"][name] = {"tokens_width_hidden": shape, "pieces_kernel_ms": pieces(*shape, args.reps),
                               "mlp": whole_mlp(*shape, args.reps)}
        print(name, json.dumps(doc["shapes"][name], indent=1), flush=True)
        (args.out / "mlp_kernels.json").write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
