"""The GELU MLP with its activation in cuBLASLt or quack GEMM epilogues (nn/fused_mlp.py): on CPU the same custom
ops run as PyTorch math, which checks the autograd wiring; on a GPU the kernels are checked against it."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _fast import tiny_losses

from sensorium.models.dual_encoder import DualEncoder
from sensorium.nn import MLP
from sensorium.nn.fused_mlp import gelu_mlp, quack_available
from sensorium.train.fast import ContrastiveStep, FastConfig, clip_config, epilogue_mlp

ROOT = Path(__file__).resolve().parents[1]


# (kernels, the MLP's activation): cuBLASLt computes tanh-GELU; quack the MLP's own GELU, erf or tanh
CASES = [("cublaslt", "gelu_tanh"), ("quack", "gelu"), ("quack", "gelu_tanh")]


def _pair(dim: int = 64, hidden: int = 256, device: str = "cpu", kernels: str = "cublaslt",
          act: str = "gelu_tanh") -> tuple[MLP, MLP]:
    torch.manual_seed(0)
    reference = MLP(dim, hidden, act=act).to(device)
    for p in reference.parameters():  # non-zero biases, so that bias gradients are exercised
        torch.nn.init.normal_(p, std=0.2)
    fused = copy.deepcopy(reference)
    assert epilogue_mlp(fused, kernels)
    return reference, fused


def _grads(module: torch.nn.Module, x: torch.Tensor, run=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    y = (module if run is None else run)(x)
    (y.float() * torch.linspace(-1, 1, y.shape[-1], device=y.device)).sum().backward()
    return y.detach(), {"x": x.grad, **{n: p.grad for n, p in module.named_parameters()}}


@pytest.mark.parametrize("kernels,act", CASES)
def test_epilogue_mlp_equals_the_gelu_mlp_with_its_gradients(kernels, act):
    """Output and every gradient (input, both weights, both biases) equal the plain MLP with the GELU the kernels
    compute, eager and traced by torch.compile (aot_eager), for a 3-D input."""
    reference, fused = _pair(kernels=kernels, act=act)
    x = torch.randn(2, 5, 64)
    y_ref, g_ref = _grads(reference, x)
    for run in (None, torch.compile(fused, backend="aot_eager")):
        fused.zero_grad(set_to_none=True)
        y, g = _grads(fused, x, run)
        assert y.shape == y_ref.shape and torch.allclose(y, y_ref, atol=1e-5)
        for name in g_ref:
            assert torch.allclose(g[name], g_ref[name], atol=1e-5, rtol=1e-4), name


def test_epilogue_mlp_leaves_other_mlps_and_trains_the_dual_encoder():
    """SwiGLU and bias-free MLPs are not patched; mlp_kernel='cublaslt' trains the tiny dual encoder with the
    losses of the erf-GELU model to within the tanh approximation; an unknown kernel is named."""
    assert not epilogue_mlp(MLP(64, 128, act="swiglu"))
    assert not epilogue_mlp(MLP(64, 128, act="gelu", bias=False))
    assert not epilogue_mlp(MLP(64, 128, act="silu"))
    losses = {k: tiny_losses(FastConfig(bf16=False, mlp_kernel=k), steps=3) for k in ("inductor", "cublaslt", "quack")}
    assert losses["cublaslt"] == pytest.approx(losses["inductor"], rel=1e-3), losses
    assert losses["quack"] == pytest.approx(losses["inductor"], rel=1e-5), losses  # erf GELU, as the model
    assert losses["cublaslt"][2] < losses["cublaslt"][0]
    with pytest.raises(ValueError, match="tanh-GELU only"):
        gelu_mlp(torch.randn(2, 64), torch.nn.Linear(64, 128), torch.nn.Linear(128, 64), "cublaslt", "none")
    with pytest.raises(ValueError, match="mlp_kernel='triton'"):
        ContrastiveStep(DualEncoder(clip_config("tiny")), FastConfig(mlp_kernel="triton"))
    with pytest.raises(ValueError, match="choose one"):
        ContrastiveStep(DualEncoder(clip_config("tiny")), FastConfig(mlp_kernel="cublaslt", fp8="tensorwise"))


def _need(kernels: str) -> None:
    if kernels == "quack" and not quack_available():
        pytest.skip("quack-kernels is not installed (pip install 'sensorium[quack]') or the GPU is not sm90/sm100")


@pytest.mark.gpu
@pytest.mark.parametrize("kernels,act", CASES)
def test_cuda_epilogues_match_the_reference_in_bf16(kernels, act):
    """On CUDA in bf16 the epilogue kernels give the MLP's output and gradients (with the GELU they compute) to
    bf16 accuracy (relative error of each tensor <= 2%), under autocast with float32 weights as in training."""
    _need(kernels)
    reference, fused = _pair(768, 3072, "cuda", kernels, act)
    x = torch.randn(4, 197, 768, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_ref, g_ref = _grads(reference, x)
        y, g = _grads(fused, x)
    assert y.dtype == torch.bfloat16
    rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()  # noqa: E731
    errors = {"out": rel(y, y_ref), **{n: rel(g[n], g_ref[n]) for n in g_ref}}
    assert max(errors.values()) <= 0.02, errors
    approximate = "none" if act == "gelu" else "tanh"
    assert gelu_mlp(x.bfloat16(), fused.fc1.bfloat16(), fused.fc2.bfloat16(), kernels, approximate).dtype == \
        torch.bfloat16


_GRAPHS_FIRST = """
import json, sys, torch
from sensorium.models.dual_encoder import DualEncoder
from sensorium.train.fast import ContrastiveStep, FastConfig, clip_config, synthetic_batch
losses = {}
for mode in ("reduce-overhead", "default"):  # graphs first: nothing has touched cuBLASLt in this process yet
    torch._dynamo.reset()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = DualEncoder(clip_config("tiny"))
    step = ContrastiveStep(model, FastConfig(compile="model", mlp_kernel=sys.argv[1], compile_mode=mode))
    pixels, ids = synthetic_batch(model.cfg, 16, "cuda")
    losses[mode] = [step(pixels, ids).item() for _ in range(4)]
print(json.dumps(losses))
"""


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["cublaslt", "quack"])
def test_cuda_epilogue_mlp_under_cuda_graphs_follows_the_uncaptured_step(kernels):
    """The custom ops are captured into CUDA graphs (compile_mode="reduce-overhead") and replayed, in a fresh
    process where the graphed step is the first to use them (cuBLASLt's workspace must not land in the graph's
    memory pool; quack autotunes at its first call): the losses of four steps follow those of the same compiled
    step without graphs."""
    _need(kernels)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", _GRAPHS_FIRST, kernels], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    losses = json.loads(run.stdout.strip().splitlines()[-1])
    assert losses["reduce-overhead"] == pytest.approx(losses["default"], rel=2e-2)
    assert losses["reduce-overhead"][3] < losses["reduce-overhead"][0]
