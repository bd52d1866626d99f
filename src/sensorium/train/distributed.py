"""Contrastive training across processes, launched by torchrun: DDP or FSDP2 (`fully_shard`) around the
same ContrastiveStep, losses gathered across ranks (objectives/contrastive.py), timeouts on rendezvous and
collectives, and a clear message on every rank when one of them dies.

    torchrun --standalone --nproc-per-node 2 -m sensorium.train.distributed --model ViT-B-16 --strategy ddp \\
        --batch-size 256 --compile blocks --json out.json
    ... --check-out DIR --global-batch 16   # loss and full gradients of one step, for the equivalence check
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from sensorium.models.dual_encoder import DualEncoder
from sensorium.nn import Block
from sensorium.train.fast import (
    ATTENTION_BACKENDS,
    COMPILE_MODES,
    COMPILE_SCOPES,
    FP8_RECIPES,
    MLP_KERNELS,
    ContrastiveStep,
    FastConfig,
    clip_config,
    synthetic_batch,
    time_steps,
)

STRATEGIES = ("ddp", "fsdp", "none")


class RankFailure(RuntimeError):
    """Another rank died or hung: a rendezvous or collective did not complete."""


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init(timeout_s: float = 600.0, use: str = "auto") -> tuple[int, int, torch.device]:
    """Join the process group (NCCL on CUDA, gloo on CPU) with `timeout_s` on rendezvous and collectives;
    returns (rank, world size, device). Without torchrun's environment: (0, 1, device), no group. `use`:
    auto (this rank's GPU if there is one), cuda or cpu."""
    rank, world, local = env_world()
    if use not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device={use!r}; expected auto, cuda or cpu")
    if use == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is available here; use device=auto or cpu")
    gpu = use != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", local) if gpu else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if "MASTER_ADDR" not in os.environ or dist.is_initialized():
        return rank, world, device
    where = f"{os.environ['MASTER_ADDR']}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    except (dist.DistError, RuntimeError) as err:
        raise RankFailure(f"rank {rank}/{world}: could not reach all {world} ranks at {where} within "
                          f"{timeout_s:.0f}s (--timeout-s): did another rank fail to start? ({err})") from err
    return rank, world, device


def _average_grad(param: torch.Tensor) -> None:
    """Average a replicated parameter's gradient over all ranks, in place."""
    dist.all_reduce(param.grad)
    param.grad.div_(dist.get_world_size())


def wrap(pair: nn.Module, strategy: str, device: torch.device) -> nn.Module:
    """Put a ContrastivePair under DDP, or FSDP2 with one shard group per transformer Block plus the root
    (unchanged without a process group: one process needs neither)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if not dist.is_initialized():
        return pair
    if strategy == "none" and dist.get_world_size() > 1:
        raise ValueError("strategy='none' with several ranks would train diverging replicas; use ddp or fsdp")
    if strategy == "ddp":
        return DistributedDataParallel(pair, device_ids=[device.index] if device.type == "cuda" else None,
                                       gradient_as_bucket_view=True)
    if strategy == "fsdp":
        for block in [m for m in pair.modules() if isinstance(m, Block)]:
            fully_shard(block)
        # FSDP2 cannot shard 0-d parameters (the logit scale and bias): they stay replicated, their
        # gradients averaged across ranks as soon as they are accumulated
        scalars = {p for p in pair.parameters() if p.dim() == 0}
        fully_shard(pair, ignored_params=scalars or None)
        for p in scalars:
            p.register_post_accumulate_grad_hook(_average_grad)
    return pair


def _full(t: torch.Tensor) -> torch.Tensor:
    """A plain CPU tensor from a tensor or an FSDP2 DTensor shard (gathered)."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().float().cpu()


def gradients(model: str, strategy: str, global_batch: int, seed: int = 0, fast: FastConfig | None = None,
              device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Loss and full parameter gradients of one forward/backward on the same global batch: each rank takes
    its contiguous slice through `strategy`; one process without a group runs the plain model. Keys:
    'loss' and 'grad/<parameter name>'. float32 unless `fast` says otherwise."""
    fast = fast or FastConfig(bf16=False)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if global_batch % world:
        raise ValueError(f"global batch {global_batch} does not split over {world} ranks")
    torch.manual_seed(seed)
    net = DualEncoder(clip_config(model)).to(device)
    step = ContrastiveStep(net, fast, wrap=lambda p: wrap(p, strategy, torch.device(device)) if world > 1 else p)
    pixels, ids = synthetic_batch(net.cfg, global_batch, device, seed)
    n = global_batch // world
    loss = step.forward_loss(pixels[rank * n:(rank + 1) * n], ids[rank * n:(rank + 1) * n])
    loss.backward()
    loss = loss.detach()
    if world > 1 and fast.local_loss:  # each rank holds the loss of its own rows: the global loss is the mean
        dist.all_reduce(loss)
        loss /= world
    out = {"loss": loss.float().cpu().reshape(1)}
    out.update({f"grad/{name}": _full(p.grad) for name, p in net.named_parameters() if p.grad is not None})
    return out


def compare(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Largest relative gradient error ||g - g_ref|| / ||g_ref|| over parameters, and the loss difference."""
    missing = sorted(set(reference) ^ set(other))
    if missing:
        raise ValueError(f"gradient sets differ: {missing[:5]}")
    worst, name = 0.0, ""
    for key, ref in reference.items():
        if key == "loss":
            continue
        err = float((other[key] - ref).norm() / ref.norm().clamp_min(1e-12))
        if err > worst:
            worst, name = err, key
    return {"loss_ref": float(reference["loss"]), "loss": float(other["loss"]),
            "loss_abs_err": abs(float(other["loss"] - reference["loss"])), "max_rel_grad_err": worst,
            "worst_param": name.removeprefix("grad/"), "n_params": len(reference) - 1}


def _fast_config(args: argparse.Namespace) -> FastConfig:
    return FastConfig(compile=args.compile, compile_backend=args.compile_backend, checkpoint=args.checkpoint,
                      local_loss=args.local_loss, loss=args.loss, bf16=not args.no_bf16, accum=args.accum,
                      fp8=args.fp8, mlp_kernel=args.mlp_kernel, attention=args.attention,
                      compile_mode=args.compile_mode)


def throughput(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> dict[str, Any]:
    """Samples/s of synthetic-data training at `--batch-size` per rank (weak scaling)."""
    torch.manual_seed(args.seed)
    net = DualEncoder(clip_config(args.model)).to(device)
    step = ContrastiveStep(net, _fast_config(args), wrap=lambda p: wrap(p, args.strategy, device))
    pixels, ids = synthetic_batch(net.cfg, args.batch_size, device, args.seed + rank)
    calls = [0]
    fail = (args.simulate_failure or "-1:-1").split(":")
    fail_rank, fail_step, hang = int(fail[0]), int(fail[1]), fail[2:] == ["hang"]

    def run() -> torch.Tensor:
        calls[0] += 1
        if rank == fail_rank and calls[0] == fail_step:
            print(f"rank {rank}/{world}: simulated {'hang' if hang else 'failure'} at step {fail_step}",
                  file=sys.stderr, flush=True)
            if hang:
                time.sleep(3 * args.timeout_s)
            os._exit(3)
        return step(pixels, ids)

    timing = time_steps(run, device, warmup=args.warmup, target_s=args.target_s, max_steps=args.max_steps,
                        agree=lambda n: _fewest_steps(n, device))
    loss = float(timing.pop("last"))
    samples_s = world * args.batch_size / timing["step_s"]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"model": args.model, "strategy": args.strategy, "world": world, "batch_per_rank": args.batch_size,
            "compile": args.compile, "checkpoint": args.checkpoint, "fp8": args.fp8,
            "mlp_kernel": args.mlp_kernel, "attention": args.attention, "compile_mode": args.compile_mode,
            "local_loss": args.local_loss,
            "bf16": not args.no_bf16, "accum": args.accum, "samples_per_s": samples_s,
            "step_ms": 1000 * timing["step_s"], "steps_timed": timing["steps"], "warmup_s": timing["warmup_s"],
            "final_loss": loss, "peak_mem_gib_rank0": peak, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "backend": dist.get_backend() if dist.is_initialized() else None}


def _fewest_steps(n: int, device: torch.device) -> int:
    """The smallest step count any rank proposes: every rank must run the same number of steps."""
    if not (dist.is_available() and dist.is_initialized()):
        return n
    count = torch.tensor([n], device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MIN)
    return int(count.item())


def check(args: argparse.Namespace, rank: int, device: torch.device) -> None:
    """Equivalence mode: for each of `--checks` (strategy, '-local' for local loss) write the loss and full
    gradients of one float32 step on the same global batch to CHECK_OUT/<check>.safetensors (rank 0)."""

    if device.type == "cuda":  # exact float32 matmuls for the comparison
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    out = Path(args.check_out)
    out.mkdir(parents=True, exist_ok=True)
    for item in args.checks.split(","):
        strategy, _, local = item.partition("-")
        fast = FastConfig(bf16=False, local_loss=local == "local", loss=args.loss)
        result = gradients(args.model, strategy, args.global_batch, args.seed, fast, device)
        if rank == 0:
            save_file({k: v.contiguous() for k, v in result.items()}, str(out / f"{item}.safetensors"))


def parser() -> argparse.ArgumentParser:
    """Command-line options of the torchrun entry."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-16",
                   help="ViT-B-16 | ViT-B-32 | ViT-L-14 | tiny (open_clip dimensions)")
    p.add_argument("--strategy", default="ddp", choices=STRATEGIES)
    p.add_argument("--batch-size", type=int, default=256, help="samples per rank and step")
    p.add_argument("--accum", type=int, default=1, help="micro-batches per step (lowers activation memory)")
    p.add_argument("--compile", default="none", choices=COMPILE_SCOPES)
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                   help="reduce-overhead: CUDA graphs (pair with --attention cudnn+fa4)")
    p.add_argument("--attention", default="auto", choices=ATTENTION_BACKENDS,
                   help="SDPA backend, or fa4 / cudnn+fa4: FlashAttention-4 on the packed QKV (flash-attn-4)")
    p.add_argument("--checkpoint", action="store_true", help="activation checkpointing of every block")
    p.add_argument("--fp8", default="off", choices=FP8_RECIPES, help="float8 matmuls in the blocks (torchao)")
    p.add_argument("--mlp-kernel", default="inductor", choices=MLP_KERNELS,
                   help="cublaslt: GELU in cuBLASLt GEMM epilogues (tanh-GELU); quack: in quack GEMM epilogues (erf)")
    p.add_argument("--local-loss", action="store_true", help="local rows vs the global batch only")
    p.add_argument("--loss", default="clip", choices=("clip", "siglip"))
    p.add_argument("--no-bf16", action="store_true", help="float32 towers (no autocast)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--target-s", type=float, default=5.0, help="seconds of timed steps")
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=600.0, help="rendezvous and collective timeout")
    p.add_argument("--json", default=None, help="write the throughput result here (rank 0)")
    p.add_argument("--check-out", default=None, help="equivalence mode: write loss + gradients into this folder")
    p.add_argument("--checks", default="ddp,fsdp,ddp-local", help="equivalence mode: strategy[-local] list")
    p.add_argument("--global-batch", type=int, default=16, help="equivalence mode: samples over all ranks")
    p.add_argument("--simulate-failure", default="", metavar="RANK:STEP[:hang]",
                   help="tests: that rank dies (or hangs) at that step")
    return p


def _on_sigterm(rank: int, world: int):
    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        print(f"rank {rank}/{world}: stopped by the launcher (signal {signum}): another rank failed, "
              f"its error is reported above", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    return handler


def _is_peer_failure(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return isinstance(err, (RankFailure, dist.DistError)) or any(
        s in text for s in ("connection closed", "connection reset", "timed out", "timeout", "broken pipe",
                            "gloo", "nccl", "peer"))


def main(argv: list[str] | None = None) -> int:
    """torchrun entry: throughput (default) or equivalence (--check-out) of the contrastive step."""
    args = parser().parse_args(argv)
    rank, world, _ = env_world()
    signal.signal(signal.SIGTERM, _on_sigterm(rank, world))
    start = time.perf_counter()
    try:
        rank, world, device = init(args.timeout_s)
        if args.check_out:
            check(args, rank, device)
        else:
            result = throughput(args, rank, world, device)
            if rank == 0:
                print(json.dumps(result))
                if args.json:
                    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        return 0
    except Exception as err:  # noqa: BLE001 - every failure ends this rank with a message, never a hang
        traceback.print_exc()
        elapsed = time.perf_counter() - start
        if world > 1 and _is_peer_failure(err):
            msg = (f"rank {rank}/{world}: a rendezvous or collective failed after {elapsed:.0f}s "
                   f"(timeout {args.timeout_s:.0f}s): another rank probably died or hung; see its log. Exiting.")
        else:
            msg = f"rank {rank}/{world}: failed: {type(err).__name__}: {err}"
        print(msg, file=sys.stderr, flush=True)
        os._exit(2)  # skip process-group teardown, which can block on a dead peer


if __name__ == "__main__":
    sys.exit(main())
