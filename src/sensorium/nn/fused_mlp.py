"""A GELU MLP whose activation lives in cuBLASLt GEMM epilogues, for training on NVIDIA GPUs.

fc2(gelu(fc1 x)) normally costs, besides its four GEMMs, a GELU kernel in the forward and a GELU-gradient and a
bias-gradient kernel in the backward, each a full pass over the [tokens, hidden] activation. Here fc1's GEMM
applies the bias and the GELU and keeps the pre-activation in its epilogue (GELU_AUX_BIAS), and fc2's
input-gradient GEMM multiplies by the GELU gradient in its epilogue (DGELU); fc1's bias gradient is a column sum
of that. (DGELU_BGRAD, which would add the bias gradient to the epilogue, ran as a slow separate kernel on an
H100.) PyTorch exposes these epilogues only in the forward, so they are called through ctypes and wrapped as
custom ops that torch.compile treats as opaque kernels. cuBLASLt's GELU is the tanh approximation. On CPU, and
for inputs cuBLASLt cannot take, the same ops run as PyTorch math with tanh-GELU.

The same MLP also runs on quack's CuTe DSL GEMMs (`kernels="quack"`, the optional `quack-kernels` package, Hopper
and Blackwell): fc1 with bias and GELU in its epilogue, fc2's input gradient with the GELU gradient and fc1's
bias gradient (a column sum) in its epilogue. quack computes erf GELU as well as tanh, so that path computes the
model's own GELU.
"""

from __future__ import annotations

import ctypes
import glob
import os
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F

# cublasLt.h (CUDA 12/13): descriptor attributes, epilogues, types
_TRANSA, _TRANSB, _EPILOGUE, _BIAS_POINTER, _AUX_POINTER, _AUX_LD = 3, 4, 7, 8, 11, 12
_GELU_AUX_BIAS, _DGELU = 164, 192  # (DGELU_BGRAD = 208: slower here, see matmul_dgelu)
_WITH_BIAS = (_GELU_AUX_BIAS,)
_COMPUTE_32F, _R_32F, _R_16BF, _OP_N, _OP_T = 68, 0, 14, 0, 1
_PREF_MAX_WORKSPACE = 1
_WORKSPACE_BYTES = 32 << 20


class _HeuristicResult(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspaceSize", ctypes.c_size_t), ("state", ctypes.c_int),
                ("wavesCount", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


def _load_cublaslt() -> ctypes.CDLL:
    """libcublasLt from the process (loaded by torch) or from the nvidia wheels next to torch."""
    names = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"]
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    site_packages = os.path.dirname(os.path.dirname(torch.__file__))
    for path in glob.glob(os.path.join(site_packages, "nvidia", "**", "libcublasLt.so*"), recursive=True):
        return ctypes.CDLL(path)
    raise OSError("libcublasLt not found (looked for " + ", ".join(names) + " and under site-packages/nvidia)")


_VP, _I32, _SIZE = ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t
_SIGNATURES = {  # argument types, so that 64-bit sizes and pointers are passed as such
    "cublasLtCreate": [_VP],
    "cublasLtMatmulDescCreate": [_VP, _I32, _I32],
    "cublasLtMatmulDescSetAttribute": [_VP, _I32, _VP, _SIZE],
    "cublasLtMatrixLayoutCreate": [_VP, _I32, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64],
    "cublasLtMatmulPreferenceCreate": [_VP],
    "cublasLtMatmulPreferenceSetAttribute": [_VP, _I32, _VP, _SIZE],
    "cublasLtMatmulAlgoGetHeuristic": [_VP, _VP, _VP, _VP, _VP, _VP, _VP, ctypes.c_int, _VP, _VP],
    "cublasLtMatmul": [_VP] * 14 + [_SIZE, _VP],
}


class _CublasLt:
    """One cuBLASLt handle, a workspace per device, and per problem shape a descriptor with the heuristic's
    algorithm (timing its other candidates gained nothing: see docs/performance.md)."""

    def __init__(self) -> None:
        self.lib = _load_cublaslt()
        for name, args in _SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        self.handle = ctypes.c_void_p()
        self._check(self.lib.cublasLtCreate(ctypes.byref(self.handle)), "cublasLtCreate")
        self.workspaces: dict[int, torch.Tensor] = {}
        self.plans: dict[tuple, tuple] = {}

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed with cublasStatus_t {status}")

    def _set(self, desc: ctypes.c_void_p, attr: int, value: ctypes._SimpleCData) -> None:
        self._check(self.lib.cublasLtMatmulDescSetAttribute(desc, attr, ctypes.byref(value), ctypes.sizeof(value)),
                    f"cublasLtMatmulDescSetAttribute({attr})")

    def _layout(self, rows: int, cols: int, ld: int) -> ctypes.c_void_p:
        layout = ctypes.c_void_p()
        self._check(self.lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), _R_16BF, ctypes.c_uint64(rows),
                                                        ctypes.c_uint64(cols), ctypes.c_int64(ld)),
                    "cublasLtMatrixLayoutCreate")
        return layout

    def workspace(self, device: torch.device) -> torch.Tensor:
        """The device's cuBLASLt workspace, allocated on first use. Allocate it before any CUDA-graph capture
        (`reserve_workspace`): allocated during cudagraph trees' warm-up, it would sit in the graph's private
        memory pool, which torch.compile rejects ("tensor(s) in the cudagraph pool not tracked as outputs")."""
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        if index not in self.workspaces:
            self.workspaces[index] = torch.empty(_WORKSPACE_BYTES, dtype=torch.uint8, device=f"cuda:{index}")
        return self.workspaces[index]

    def _plan(self, key: tuple, m: int, n: int, k: int, trans_a: int, lda: int, ldb: int, epilogue: int) -> tuple:
        """Descriptor, layouts and the heuristic's best algorithm for D[m, n] (column-major, ld m) =
        op(A) op(B) with this epilogue; cached by shape."""
        if key in self.plans:
            return self.plans[key]
        desc = ctypes.c_void_p()
        self._check(self.lib.cublasLtMatmulDescCreate(ctypes.byref(desc), _COMPUTE_32F, _R_32F),
                    "cublasLtMatmulDescCreate")
        self._set(desc, _TRANSA, ctypes.c_int32(trans_a))
        self._set(desc, _TRANSB, ctypes.c_int32(_OP_N))
        self._set(desc, _EPILOGUE, ctypes.c_uint32(epilogue))
        self._set(desc, _AUX_LD, ctypes.c_int64(m))
        a = self._layout(m, k, lda) if trans_a == _OP_N else self._layout(k, m, lda)
        b, d = self._layout(k, n, ldb), self._layout(m, n, m)
        pref = ctypes.c_void_p()
        self._check(self.lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "cublasLtMatmulPreferenceCreate")
        ws = ctypes.c_uint64(_WORKSPACE_BYTES)
        self._check(self.lib.cublasLtMatmulPreferenceSetAttribute(pref, _PREF_MAX_WORKSPACE, ctypes.byref(ws),
                                                                  ctypes.sizeof(ws)), "preference workspace")
        # the heuristic reads pointer alignment from the descriptor: set 256-byte aligned placeholders (a bias
        # pointer only where the epilogue has a bias or bias gradient: elsewhere cuBLASLt rejects it)
        if epilogue in _WITH_BIAS:
            self._set(desc, _BIAS_POINTER, ctypes.c_void_p(256))
        self._set(desc, _AUX_POINTER, ctypes.c_void_p(256))
        result, count = _HeuristicResult(), ctypes.c_int(0)
        self._check(self.lib.cublasLtMatmulAlgoGetHeuristic(self.handle, desc, a, b, d, d, pref, 1,
                                                            ctypes.byref(result), ctypes.byref(count)),
                    "cublasLtMatmulAlgoGetHeuristic")
        if count.value == 0:
            raise RuntimeError(f"cuBLASLt has no algorithm for epilogue {epilogue} at m={m}, n={n}, k={k}")
        self.plans[key] = (desc, a, b, d, result)
        return self.plans[key]

    def matmul(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, m: int, n: int, k: int, trans_a: int,
               lda: int, ldb: int, epilogue: int, aux: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """out (column-major m x n) = op(a) @ b with `epilogue`, on the current stream."""
        key = (a.device.index, m, n, k, trans_a, lda, ldb, epilogue)
        desc, la, lb, ld, result = self._plan(key, m, n, k, trans_a, lda, ldb, epilogue)
        if bias is not None:
            self._set(desc, _BIAS_POINTER, ctypes.c_void_p(bias.data_ptr()))
        self._set(desc, _AUX_POINTER, ctypes.c_void_p(aux.data_ptr()))
        ws = self.workspace(a.device)
        alpha, beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
        stream = ctypes.c_void_p(torch.cuda.current_stream(a.device).cuda_stream)
        self._check(self.lib.cublasLtMatmul(
            self.handle, desc, ctypes.byref(alpha), ctypes.c_void_p(a.data_ptr()), la, ctypes.c_void_p(b.data_ptr()),
            lb, ctypes.byref(beta), ctypes.c_void_p(out.data_ptr()), ld, ctypes.c_void_p(out.data_ptr()), ld,
            ctypes.byref(result.algo), ctypes.c_void_p(ws.data_ptr()), ctypes.c_size_t(_WORKSPACE_BYTES), stream),
            "cublasLtMatmul")


@lru_cache(maxsize=1)
def _cublaslt() -> _CublasLt:
    return _CublasLt()


def reserve_workspace(device: torch.device | str) -> None:
    """Allocate the cuBLASLt workspace on a CUDA `device` now, outside any CUDA-graph memory pool (a no-op
    elsewhere). `epilogue_mlp` calls it for modules already on the GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        _cublaslt().workspace(device)


def _usable(*tensors: torch.Tensor) -> bool:
    """cuBLASLt path: CUDA, bf16, contiguous, every size a multiple of 8 (16-byte aligned rows)."""
    return all(t.is_cuda and t.dtype == torch.bfloat16 and t.is_contiguous() and t.shape[-1] % 8 == 0
               for t in tensors)


@torch.library.custom_op("sensorium::linear_gelu_aux", mutates_args=())
def linear_gelu_aux(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gelu_tanh(x W^T + b), x W^T + b) for x [M, K], W [N, K], b [N]: one GEMM with the bias, the GELU and
    the saved pre-activation in its epilogue on CUDA."""
    m, k = x.shape
    n = weight.shape[0]
    if not _usable(x, weight, bias):
        pre = F.linear(x, weight, bias)
        return F.gelu(pre, approximate="tanh"), pre
    act, pre = torch.empty(m, n, dtype=x.dtype, device=x.device), torch.empty(m, n, dtype=x.dtype, device=x.device)
    # row-major act[M, N] is column-major [N, M] = W (column-major [K, N], transposed) @ x^T (column-major [K, M])
    _cublaslt().matmul(weight, x, act, m=n, n=m, k=k, trans_a=_OP_T, lda=k, ldb=k, epilogue=_GELU_AUX_BIAS,
                       bias=bias, aux=pre)
    return act, pre


@linear_gelu_aux.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (x.shape[0], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape)


@torch.library.custom_op("sensorium::matmul_dgelu", mutates_args=())
def matmul_dgelu(grad: torch.Tensor, weight: torch.Tensor, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d, d.sum(0)) with d = (grad @ W) * gelu_tanh'(pre), for grad [M, P], W [P, N], pre [M, N]: fc2's input
    gradient GEMM with the GELU gradient in its epilogue on CUDA, and fc1's bias gradient."""
    m, p = grad.shape
    n = weight.shape[1]
    if not _usable(grad, weight, pre):
        d = torch.ops.aten.gelu_backward((grad @ weight).float(), pre.float(), approximate="tanh")
        return d.to(grad.dtype), d.sum(0).to(grad.dtype)
    d = torch.empty(m, n, dtype=grad.dtype, device=grad.device)
    # row-major d[M, N] is column-major [N, M] = W^T (a [N, P] copy: column-major [P, N], transposed) @ grad^T
    # (column-major [P, M]): the same "TN" layout as the forward, which cuBLASLt runs with its nvjet kernels.
    # DGELU only: with DGELU_BGRAD, cuBLASLt 13 on an H100 ran the epilogue as a separate kernel at 0.7 ms a call
    # (bench/results/profile_step_h100_mlp.json), so the bias gradient is a plain column sum
    _cublaslt().matmul(weight.t().contiguous(), grad, d, m=n, n=m, k=p, trans_a=_OP_T, lda=p, ldb=p,
                       epilogue=_DGELU, aux=pre)
    return d, d.sum(0)


@matmul_dgelu.register_fake
def _(grad: torch.Tensor, weight: torch.Tensor, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return pre.new_empty(pre.shape), pre.new_empty(pre.shape[1:])


@lru_cache(maxsize=None)
def _quack_library():
    """quack.epilogue.library (GEMM epilogue modules), or None when quack-kernels is not installed."""
    try:
        from quack.epilogue import library
    except Exception:  # ImportError, or a CuTe DSL that fails to load its CUDA libraries
        return None
    return library


def quack_available(device: torch.device | str | None = None) -> bool:
    """Whether the quack GEMMs can run on `device` (default: the current CUDA device): quack-kernels installed and
    an sm90/sm100-class GPU."""
    if not torch.cuda.is_available() or _quack_library() is None:
        return False
    device = torch.device(device) if device is not None else torch.device("cuda")
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] in (9, 10)


_QUACK_GELU = {"none": "gelu_erf", "tanh": "gelu_tanh_approx"}  # F.gelu's `approximate` -> quack activation


def _quack_usable(*tensors: torch.Tensor) -> bool:
    """quack path for these tensors; on CUDA without quack, warn (once) that PyTorch math runs instead."""
    if not _usable(*tensors):
        return False
    if quack_available(tensors[0].device):
        return True
    warnings.warn("GELU MLP with kernels='quack' on CUDA without quack-kernels (pip install 'sensorium[quack]'; "
                  "compute capability 9.x/10.x): running PyTorch math", RuntimeWarning, stacklevel=3)
    return False


@torch.library.custom_op("sensorium::quack_linear_gelu", mutates_args=())
def quack_linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(gelu(x W^T + b), x W^T + b) for x [M, K], W [N, K], b [N], GELU erf (approximate="none") or tanh: one quack
    GEMM with the bias, the GELU and the saved pre-activation in its epilogue on CUDA."""
    if not _quack_usable(x, weight, bias):
        pre = F.linear(x, weight, bias)
        return F.gelu(pre, approximate=approximate), pre
    mod = _quack_library().linear_act_mod(_QUACK_GELU[approximate], gated=False, has_c=False, has_rowvec=True,
                                          has_colvec=False)
    shape = (x.shape[0], weight.shape[0])
    act, pre = x.new_empty(shape), x.new_empty(shape)
    mod(x, weight.t(), None, out={"D": pre, "mAuxOut": act}, mRowVecBroadcast=bias)
    return act, pre


@quack_linear_gelu.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (x.shape[0], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape)


@torch.library.custom_op("sensorium::quack_matmul_dgelu", mutates_args=())
def quack_matmul_dgelu(grad: torch.Tensor, weight: torch.Tensor, pre: torch.Tensor,
                       approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(d, d.sum(0)) with d = (grad @ W) * gelu'(pre), for grad [M, P], W [P, N], pre [M, N]: fc2's input gradient
    GEMM with the GELU gradient and fc1's bias gradient (column sums) in one quack epilogue on CUDA."""
    if not _quack_usable(grad, weight, pre):
        d = torch.ops.aten.gelu_backward((grad @ weight).float(), pre.float(), approximate=approximate)
        return d.to(grad.dtype), d.sum(0).to(grad.dtype)
    d = torch.empty_like(pre)
    # the bias gradient in the epilogue and quack's dynamic tile scheduler: in ViT-B-16 step profiles on an H100
    # this took 9.05 ms a step against 9.26 with the static scheduler, and a GELU-gradient-only epilogue plus a
    # separate column sum took 7.9-8.4 + 1.5 ms (docs/performance.md)
    sums = _quack_library().dact_dbias_mod(_QUACK_GELU[approximate])(grad, weight, pre, out={"D": d},
                                                                      dynamic_scheduler=True)["dwb"]
    return d, sums.reshape(pre.shape[1]).to(grad.dtype)


@quack_matmul_dgelu.register_fake
def _(grad: torch.Tensor, weight: torch.Tensor, pre: torch.Tensor, approximate: str
      ) -> tuple[torch.Tensor, torch.Tensor]:
    return pre.new_empty(pre.shape), pre.new_empty(pre.shape[1:])


# kernels -> (fc1 forward with GELU, fc2 input gradient with the GELU gradient), both (..., approximate)
_KERNELS = {
    "cublaslt": (lambda x, w, b, approximate: linear_gelu_aux(x, w, b),
                 lambda grad, w, pre, approximate: matmul_dgelu(grad, w, pre)),
    "quack": (quack_linear_gelu, quack_matmul_dgelu),
}
KERNELS = tuple(_KERNELS)


class _GeluMLP(torch.autograd.Function):
    """fc2(gelu(fc1 x)) on 2-D inputs of one dtype, with the epilogue ops of `kernels`."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, kernels, approximate):
        fc1, ctx.dgrad = _KERNELS[kernels]
        ctx.approximate = approximate
        act, pre = fc1(x, w1, b1, approximate)
        ctx.save_for_backward(x, w1, w2, act, pre)
        return torch.addmm(b2, act, w2.t())

    @staticmethod
    def backward(ctx, grad):
        x, w1, w2, act, pre = ctx.saved_tensors
        grad = grad.contiguous()
        d_pre, d_b1 = ctx.dgrad(grad, w2, pre, ctx.approximate)
        return d_pre @ w1, d_pre.t() @ x, d_b1, grad.t() @ act, grad.sum(0), None, None


def gelu_mlp(x: torch.Tensor, fc1: torch.nn.Linear, fc2: torch.nn.Linear, kernels: str = "cublaslt",
             approximate: str = "tanh") -> torch.Tensor:
    """fc2(gelu(fc1 x)) for x [..., dim] with the GELU in GEMM epilogues of `kernels` (cublaslt: tanh-GELU only;
    quack: `approximate` "none" (erf) or "tanh"); under autocast the inputs and weights are cast to the autocast
    dtype first (as F.linear would be)."""
    if kernels not in _KERNELS:
        raise ValueError(f"kernels={kernels!r}; expected one of {', '.join(KERNELS)}")
    if approximate not in _QUACK_GELU or (kernels == "cublaslt" and approximate != "tanh"):
        raise ValueError(f"approximate={approximate!r} with kernels={kernels!r}: cublaslt computes tanh-GELU only, "
                         f"quack 'none' (erf) or 'tanh'")
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    with torch.autocast(x.device.type, enabled=False):
        cast = [t.to(dtype).contiguous() for t in (x.reshape(-1, x.shape[-1]), fc1.weight, fc1.bias, fc2.weight,
                                                   fc2.bias)]
        return _GeluMLP.apply(*cast, kernels, approximate).view(*x.shape[:-1], fc2.out_features)
