"""Fast contrastive training of a dual encoder on one GPU or many.

- `clip_config(name)` (train/clip_models.py, re-exported): Sensorium's DualEncoder at the dimensions of a
  configs/clip file (open_clip's ViT-B-16, ViT-B-32, ViT-L-14; tiny).
- `accelerate(module, cfg)`: an in-place patch (state-dict keys unchanged) that runs every transformer
  Block through one `torch.compile`d function (regional compilation: one graph per block shape, reused by
  all layers), with activation checkpointing and a bf16 residual stream under autocast; or compiles the
  whole module.
- `epilogue_mlp`: a block's GELU MLP with the GELU in cuBLASLt or quack GEMM epilogues (nn/fused_mlp.py).
- `packed_attention`: a block's self-attention on FlashAttention-4 kernels straight from the packed QKV
  projection (nn/flash_qkv.py).
- `float8_blocks`: float8 matmuls in the blocks' linears (torchao), fewer bytes of activations saved.
- `ContrastiveStep`: forward under bf16 autocast, contrastive loss in float32 (gathered across ranks),
  backward, fused AdamW, gradient accumulation with DDP/FSDP2 sync only on the last micro-batch. It never
  synchronises with the host: the loss comes back as a device tensor. On one GPU it can run the text tower on a
  second CUDA stream (`tower_streams`) and replay the whole step as one CUDA graph (`step_graph.StepGraph`).
- `memory_advice` (train/memory_advice.py, re-exported): CUDA out-of-memory re-raised with the options that
  lower memory.
- `count_flops`, `time_steps`, `synthetic_batch`: what the benchmarks measure with.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint as _checkpoint
from torch.utils.flop_counter import FlopCounterMode

from sensorium.models.dual_encoder import DualEncoder, DualEncoderConfig
from sensorium.nn import MLP, Attention, Block
from sensorium.nn.flash_qkv import fa4_available, flash_attention_qkv
from sensorium.nn.fused_mlp import KERNELS, gelu_mlp, quack_available, reserve_workspace
from sensorium.nn.transformer import ACTIVATIONS
from sensorium.objectives import LOSSES, build_loss
from sensorium.train.clip_models import clip_config  # noqa: F401 (re-exported)
from sensorium.train.memory_advice import OutOfMemoryAdvice, memory_advice  # noqa: F401 (OutOfMemoryAdvice re-exported)
from sensorium.train.step_graph import StepGraph
from sensorium.train.trainer import TrainConfig, make_optimizer

COMPILE_SCOPES = ("none", "blocks", "towers", "model", "step")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
# SDPA backends, plus "fa4": the blocks' self-attention on FlashAttention-4 kernels from the packed QKV projection
# (nn/flash_qkv.py; the optional flash-attn-4 package), and "cudnn+fa4": cuDNN's forward kernel with FA4's backward
# there; every other attention on SDPA's own choice
ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math", "fa4", "cudnn+fa4")
# the blocks' GELU MLPs: "inductor" (PyTorch ops, fused by torch.compile) | "cublaslt" (GELU and its gradient in
# cuBLASLt GEMM epilogues, nn/fused_mlp.py; tanh-GELU) | "quack" (the same on quack's CuTe DSL GEMMs, the
# optional quack-kernels package: the model's own GELU, erf or tanh, and fc1's bias gradient in the epilogue too)
MLP_KERNELS = ("inductor", "cublaslt", "quack")
# torchao float8 training recipes (Float8LinearRecipeName values); "off" keeps every matmul in bf16
FP8_RECIPES = ("off", "tensorwise", "rowwise", "rowwise_with_gw_hp")


@dataclass
class FastConfig:
    """Speed and memory options of the contrastive training step."""

    # none | blocks (regional: every transformer Block) | towers (each tower of the dual encoder: one graph for
    # the image tower, one for the text tower) | model (the whole module) | step (the module and the contrastive
    # loss in one graph: fewer launches between forward and backward)
    compile: str = "none"
    compile_backend: str = "inductor"  # aot_eager / eager trace without generating kernels (CPU tests)
    # torch.compile mode: default | max-autotune-no-cudagraphs (Triton GEMM templates tried against cuBLAS)
    # | reduce-overhead (CUDA graphs) | max-autotune (both)
    compile_mode: str = "default"
    # capture the whole step (forward, loss, backward, optimizer) in one CUDA graph after GRAPH_WARMUP steps and
    # replay it (compile_mode="reduce-overhead" graphs the compiled module's forward and backward only, with host
    # work between them). One GPU, the same batch shape every step; not with a CUDA-graph compile_mode
    step_graph: bool = False
    # the text tower on a second CUDA stream, concurrent with the image tower (the towers are independent until
    # the loss; autograd runs each tower's backward on its forward's stream). compile "none", "blocks" or "towers"
    tower_streams: bool = False
    # SDPA backend: auto (PyTorch's choice) | flash | cudnn | efficient | math, or FA4 on the packed projection: fa4
    # | cudnn+fa4 (ATTENTION_BACKENDS). Compiled graphs fix the backend when traced, and Inductor's FX graph cache
    # key may not include it: disable the cache when comparing backends. FA4 calls cost ~0.3 ms of host time each:
    # pair them with compile_mode "reduce-overhead" (CUDA graphs), without which the step was slower on an H100
    attention: str = "auto"
    checkpoint: bool = False  # activation checkpointing of every transformer Block
    # float8 matmuls in the transformer blocks' linears (torchao, an optional extra: pip install torchao):
    # off | tensorwise | rowwise | rowwise_with_gw_hp. Changes the numerics; needs an H100-class GPU
    fp8: str = "off"
    # GELU MLP kernels (MLP_KERNELS). "cublaslt" computes GELU with the tanh approximation (the model's "gelu" is
    # erf; they differ by less than bf16 rounding); +5% samples/s at ViT-B-16 on an H100 (docs/performance.md).
    # "quack" computes the model's GELU (erf or tanh) and needs quack-kernels and an sm90/sm100 GPU
    mlp_kernel: str = "inductor"
    # residual stream in the autocast dtype (bf16) rather than float32, as open_clip's vision tower has it
    # under autocast: half the bytes for every norm and residual add; norms still compute in float32
    autocast_residual: bool = True
    local_loss: bool = False
    loss: str = "clip"  # clip | siglip
    bf16: bool = True  # bf16 autocast for the towers (the loss is computed in float32)
    accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-4
    weight_decay: float = 0.2
    grad_clip: float = 0.0  # 0 = no clipping


def _block_forward(block: Block, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
                   recompute: bool) -> torch.Tensor:
    """One transformer block, optionally under non-reentrant activation checkpointing."""
    if recompute:
        return _checkpoint(Block.forward, block, x, mask, is_causal, use_reentrant=False)
    return Block.forward(block, x, mask, is_causal)


def _patch_block(block: Block, run: Callable[..., torch.Tensor], recompute: bool, cast: bool) -> None:
    """Route `block.forward` through `run` when no RoPE or KV cache is used (the `layer` index is dropped,
    so one compiled graph serves every layer of the same shape); `cast`: input to the autocast dtype."""
    original = block.forward

    def forward(x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False, rope=None,
                cache=None, layer: int = 0, groups=None, keep=None) -> torch.Tensor:
        if cast and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        if rope is not None or cache is not None or groups is not None or keep is not None:  # the general path
            return original(x, mask=mask, is_causal=is_causal, rope=rope, cache=cache, layer=layer, groups=groups,
                            keep=keep)
        return run(block, x, mask, is_causal, recompute and torch.is_grad_enabled())

    block.forward = forward


def accelerate(module: nn.Module, cfg: FastConfig) -> nn.Module:
    """Apply `cfg.compile`, `cfg.checkpoint`, `cfg.autocast_residual` and `cfg.mlp_kernel` to `module` in place;
    returns the module to call (the compiled wrapper for compile="model", else `module` itself; compile="step"
    is applied by ContrastiveStep, which compiles the loss with the module)."""
    if cfg.compile not in COMPILE_SCOPES:
        raise ValueError(f"compile={cfg.compile!r}; expected one of {', '.join(COMPILE_SCOPES)}")
    blocks = [m for m in module.modules() if isinstance(m, Block)]
    options = compile_options(cfg)
    if cfg.compile == "blocks":
        run = torch.compile(_block_forward, **options)
    else:
        run = _block_forward
    if cfg.mlp_kernel not in MLP_KERNELS:
        raise ValueError(f"mlp_kernel={cfg.mlp_kernel!r}; expected one of {', '.join(MLP_KERNELS)}")
    if cfg.mlp_kernel != "inductor":
        for block in blocks:
            epilogue_mlp(block.mlp, cfg.mlp_kernel)
    if cfg.attention in ("fa4", "cudnn+fa4"):
        for block in blocks:
            packed_attention(block.attn, "cudnn" if cfg.attention == "cudnn+fa4" else "fa4")
    if cfg.checkpoint or cfg.compile == "blocks" or (cfg.autocast_residual and cfg.bf16):
        for block in blocks:
            _patch_block(block, run, cfg.checkpoint, cfg.autocast_residual and cfg.bf16)
    if cfg.compile == "towers":
        for encoder in [m for m in module.modules() if isinstance(m, DualEncoder)]:
            for tower in (encoder.vision, encoder.text):
                tower.compile(**options)
    if cfg.compile == "model":
        return torch.compile(module, **options)
    return module


def epilogue_mlp(mlp: nn.Module, kernels: str = "cublaslt") -> bool:
    """Route a GELU MLP with biases through `gelu_mlp` (GELU in the GEMM epilogues of `kernels`: cublaslt, always
    tanh-GELU, or quack, the MLP's own GELU); other MLPs (SwiGLU, experts, no bias) are left as they are. Returns
    whether `mlp` was patched. A module already on the GPU gets its cuBLASLt workspace now, so patch after moving
    the model when the step runs in CUDA graphs."""

    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r}; expected one of {', '.join(KERNELS)}")
    if not isinstance(mlp, MLP) or mlp.gated or mlp.fc1.bias is None or mlp.fc2.bias is None or \
            mlp.act not in (ACTIVATIONS["gelu"], ACTIVATIONS["gelu_tanh"]):
        return False
    approximate = "none" if kernels == "quack" and mlp.act is ACTIVATIONS["gelu"] else "tanh"
    if kernels == "cublaslt":
        reserve_workspace(mlp.fc1.weight.device)  # now, not inside a CUDA-graph warm-up (see _CublasLt.workspace)
    mlp.forward = lambda x, groups=None: gelu_mlp(x, mlp.fc1, mlp.fc2, kernels, approximate)
    return True


def packed_attention(attn: nn.Module, forward_kernel: str = "fa4") -> bool:
    """Route a fused-QKV self-attention through `flash_attention_qkv` (FlashAttention-4 kernels on the packed
    projection; `forward_kernel`: fa4 or cudnn) when it is called without a mask, RoPE, KV cache or
    context; grouped-query attention and separate projections are left as they are. Returns whether `attn` was
    patched."""

    if not isinstance(attn, Attention) or not attn.fused_qkv or attn.n_kv_heads != attn.n_heads:
        return False
    original = attn.forward

    def forward(x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False, rope=None,
                cache=None, layer: int = 0, context=None) -> torch.Tensor:
        if mask is not None or rope is not None or cache is not None or context is not None:
            return original(x, mask=mask, is_causal=is_causal, rope=rope, cache=cache, layer=layer, context=context)
        return attn.out(flash_attention_qkv(attn.qkv(x), attn.n_heads, causal=is_causal,
                                            forward=forward_kernel))

    attn.forward = forward
    return True


def float8_blocks(blocks: list[nn.Module], recipe: str) -> int:
    """Swap the nn.Linear layers inside `blocks` for torchao's Float8Linear (same parameters and state-dict
    keys) with the float8 training `recipe`; layers whose sizes are not multiples of 16 stay bf16. Returns how
    many were swapped."""
    if recipe not in FP8_RECIPES or recipe == "off":
        raise ValueError(f"fp8={recipe!r}; expected one of {', '.join(FP8_RECIPES)}")
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as err:
        raise ImportError(f"fp8={recipe!r} needs torchao (pip install 'sensorium[fp8]'): {err}") from err
    config = Float8LinearConfig.from_recipe_name(recipe)
    def fits(m: nn.Module, _name: str) -> bool:
        return isinstance(m, nn.Linear) and m.in_features % 16 == 0 and m.out_features % 16 == 0

    before = sum(type(m).__name__ == "Float8Linear" for b in blocks for m in b.modules())
    for block in blocks:
        convert_to_float8_training(block, module_filter_fn=fits, config=config)
    return sum(type(m).__name__ == "Float8Linear" for b in blocks for m in b.modules()) - before


def compile_options(cfg: FastConfig) -> dict[str, Any]:
    """torch.compile keyword arguments for `cfg` (static shapes, its backend and mode)."""
    if cfg.compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode={cfg.compile_mode!r}; expected one of {', '.join(COMPILE_MODES)}")
    return {"dynamic": False, "backend": cfg.compile_backend,
            "mode": None if cfg.compile_mode == "default" else cfg.compile_mode}


def attention_backend(name: str):
    """Context restricting `F.scaled_dot_product_attention` to one backend (`auto`: PyTorch's own choice).
    It must be active when a compiled graph is traced, since the backend is fixed then."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention={name!r}; expected one of {', '.join(ATTENTION_BACKENDS)}")
    if name in ("auto", "fa4", "cudnn+fa4"):
        return nullcontext()

    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                        "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name])


class ContrastivePair(nn.Module):
    """Training view of a DualEncoder: (pixels, ids) -> (normalised image and text embeddings, logit scale,
    logit bias), so DDP/FSDP see one forward that uses every parameter. With `text_stream` the text tower runs
    on that CUDA stream, concurrently with the image tower on the current one (autograd then runs its backward
    on that stream too)."""

    def __init__(self, model: DualEncoder, text_stream: torch.cuda.Stream | None = None):
        super().__init__()
        self.model = model
        self.text_stream = text_stream

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Embeddings [B, E] of both towers, L2-normalised, plus the head's scalars."""
        m = self.model
        bias = m.logit_bias if m.logit_bias is not None else m.logit_scale.new_zeros(())
        if self.text_stream is None or not ids.is_cuda:
            return m.encode_image(pixels, normalize=True), m.encode_text(ids, normalize=True), m.logit_scale, bias
        here, side = torch.cuda.current_stream(ids.device), self.text_stream
        side.wait_stream(here)
        with torch.cuda.stream(side):
            text = m.encode_text(ids, normalize=True)
        ids.record_stream(side)  # the caching allocator must not hand ids' memory out while side still reads it
        image = m.encode_image(pixels, normalize=True)
        here.wait_stream(side)
        text.record_stream(here)
        return image, text, m.logit_scale, bias


class ContrastiveStep:
    """One optimisation step of a DualEncoder on (pixels, ids) with the options of `FastConfig`.

    `wrap` puts the ContrastivePair under DDP or FSDP2 before `accelerate` (see train/distributed.py).
    Calling the step returns the mean loss as a device tensor; nothing waits for the GPU."""

    def __init__(self, model: DualEncoder, cfg: FastConfig, wrap: Callable[[nn.Module], nn.Module] | None = None):
        if cfg.loss not in LOSSES:
            raise ValueError(f"loss={cfg.loss!r}; expected one of {', '.join(LOSSES)}")
        if cfg.accum < 1:
            raise ValueError(f"accum={cfg.accum} must be >= 1")
        self.model, self.cfg = model, cfg
        if cfg.fp8 != "off" and cfg.mlp_kernel != "inductor":
            raise ValueError(f"fp8={cfg.fp8!r} and mlp_kernel={cfg.mlp_kernel!r} both replace the MLP matmuls; "
                             f"choose one")
        if cfg.fp8 != "off":  # before DDP/FSDP2 wrap the parameters (FSDP2 shards Float8Linear's weights)
            float8_blocks([m for m in model.modules() if isinstance(m, Block)], cfg.fp8)
        device = next(model.parameters()).device
        check_graph_options(cfg, device, distributed=wrap is not None)
        side = torch.cuda.Stream(device) if cfg.tower_streams and device.type == "cuda" else None
        pair = ContrastivePair(model, text_stream=side)
        self.wrapped = wrap(pair) if wrap is not None else pair
        self.module = accelerate(self.wrapped, cfg)
        self.loss = build_loss(cfg.loss, local_loss=cfg.local_loss)
        attention_backend(cfg.attention)  # validate now, not at the first step
        if device.type == "cuda":
            if cfg.attention in ("fa4", "cudnn+fa4"):
                _require(fa4_available, device, f"attention={cfg.attention!r}", "flash-attn-4", "fa4")
            if cfg.mlp_kernel == "quack":
                _require(quack_available, device, "mlp_kernel='quack'", "quack-kernels", "quack")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay),
                                        capturable=cfg.step_graph)
        self.graph: StepGraph | None = StepGraph(self._step) if cfg.step_graph else None
        if cfg.compile == "step":
            self.forward_loss = torch.compile(self.forward_loss, **compile_options(cfg))

    def forward_loss(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Contrastive loss of one (micro-)batch: towers under autocast, loss in float32."""
        with torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16), \
                attention_backend(self.cfg.attention):
            a, b, scale, bias = self.module(pixels, ids)
        return self.loss([a.float(), b.float()], scale.float(), bias.float())

    def _sync(self, last: bool):
        """Gradient synchronisation only on the last micro-batch (DDP no_sync / FSDP2 requires_gradient_sync)."""
        m = self.wrapped
        if hasattr(m, "set_requires_gradient_sync"):
            m.set_requires_gradient_sync(last)
        elif hasattr(m, "no_sync") and not last:
            return m.no_sync()
        return nullcontext()

    def __call__(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Forward, backward (in `accum` micro-batches) and an optimizer step; returns the mean loss."""
        n = self.cfg.accum
        if pixels.shape[0] % n or pixels.shape[0] != ids.shape[0]:
            raise ValueError(f"batch of {pixels.shape[0]} images / {ids.shape[0]} texts does not split into "
                             f"accum={n} equal micro-batches")
        with memory_advice(f"a training step (batch {pixels.shape[0]}, accum {n}, checkpoint "
                           f"{self.cfg.checkpoint}, local_loss {self.cfg.local_loss})"):
            if self.graph is not None:
                return self.graph(pixels, ids)
            return self._step(pixels, ids)

    def _step(self, pixels: torch.Tensor, ids: torch.Tensor, zero_grad: bool = True) -> torch.Tensor:
        """Micro-batches, backward, clipping and the optimizer; `zero_grad=False` when captured in a CUDA graph."""
        n = self.cfg.accum
        total = None
        for i, (p, t) in enumerate(zip(pixels.chunk(n), ids.chunk(n))):
            with self._sync(i == n - 1):
                loss = self.forward_loss(p, t) / n if n > 1 else self.forward_loss(p, t)
                loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        self.optimizer.step()
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        return total


def _require(available: Callable[[torch.device], bool], device: torch.device, option: str, package: str,
             extra: str) -> None:
    """A clear error when `option` needs optional GPU kernels that `device` cannot run."""
    if not available(device):
        raise RuntimeError(f"{option} needs the {package} package and a compute capability 9.x or 10.x GPU "
                           f"({torch.cuda.get_device_name(device)}); pip install 'sensorium[{extra}]'")


def check_graph_options(cfg: FastConfig, device: torch.device, distributed: bool) -> None:
    """Clear errors for step_graph / tower_streams combinations that cannot work."""
    if cfg.tower_streams and cfg.compile in ("model", "step"):
        raise ValueError(f"tower_streams=True runs the towers on two streams from eager code: use compile='towers', "
                         f"'blocks' or 'none', not {cfg.compile!r}")
    if cfg.tower_streams and distributed:
        raise ValueError("tower_streams=True is for one GPU: DDP/FSDP2 gradient hooks on a second stream are not "
                         "verified")
    if not cfg.step_graph:
        return
    if device.type != "cuda":
        raise ValueError(f"step_graph=True captures a CUDA graph; the model is on {device}")
    if distributed:
        raise ValueError("step_graph=True is for one GPU: DDP/FSDP2 communicate outside the captured graph")
    if cfg.compile_mode in ("reduce-overhead", "max-autotune"):
        raise ValueError(f"step_graph=True captures the step itself; compile_mode={cfg.compile_mode!r} would capture "
                         f"CUDA graphs inside it: use 'default' or 'max-autotune-no-cudagraphs'")


def synthetic_batch(cfg: DualEncoderConfig, batch: int, device: torch.device | str, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised-looking pixels [B, C, H, W] and token ids [B, L] drawn from `seed` on the CPU (the same
    on every rank and device), then moved to `device`."""
    g = torch.Generator().manual_seed(seed)
    v, t = cfg.vision, cfg.text
    pixels = torch.randn(batch, v.channels, v.image_size, v.image_size, generator=g)
    ids = torch.randint(1, t.vocab_size, (batch, t.context_length), generator=g)
    return pixels.to(device), ids.to(device)


def sync(device: torch.device | str) -> None:
    """Wait for the device (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs that torch.utils.flop_counter counts while running `fn` once (matmuls, convolutions, SDPA)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def time_steps(fn: Callable[[], Any], device: torch.device | str, warmup: int = 3, target_s: float = 4.0,
               min_steps: int = 3, max_steps: int = 50, deadline: float | None = None,
               agree: Callable[[int], int] | None = None) -> dict[str, Any]:
    """Seconds per call of `fn`: `warmup` calls (compilation happens there), a two-call estimate, then a
    device-synchronised run of as many calls as fit in `target_s` (and before `deadline`, a perf_counter).
    `agree` maps this process's step count to the one every process uses (distributed runs must time the same
    number of steps, or their collectives pair up wrongly and hang)."""
    start = time.perf_counter()
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    warmup_s = time.perf_counter() - start
    t = time.perf_counter()
    for _ in range(2):
        out = fn()
    sync(device)
    estimate = (time.perf_counter() - t) / 2
    n = int(target_s / max(estimate, 1e-6))
    if deadline is not None:
        n = min(n, int((deadline - time.perf_counter()) / max(estimate, 1e-6)))
    n = max(min_steps, min(max_steps, n))
    if agree is not None:
        n = agree(n)
    t = time.perf_counter()
    for _ in range(n):
        out = fn()
    sync(device)
    elapsed = time.perf_counter() - t
    return {"steps": n, "step_s": elapsed / n, "warmup_s": warmup_s, "last": out}
