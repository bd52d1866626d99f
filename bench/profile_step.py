"""Where the time of one contrastive training step goes: Sensorium's DualEncoder at open_clip's dimensions,
one or more FastConfig variants timed side by side in one process, then a few steps of each under
torch.profiler with the GPU kernel time grouped by kind (GEMM, attention, Triton fused kernels, optimizer, ...)
and the time the GPU sat idle.

    PYTHONPATH=src python3 bench/profile_step.py --out OUT --variants "compile=model;compile=model,attention=cudnn"
    PYTHONPATH=src python3 bench/profile_step.py --model tiny --batch-size 8 --out /tmp/prof   # CPU check

A variant is a comma list of FastConfig fields (compile, compile_mode, attention, checkpoint, fp8, ...),
torch._inductor.config settings (inductor.coordinate_descent_tuning=1) and fields of both towers' TransformerConfig
or of both tower configs (model.fused_qkv=0, model.prune_last_block=0); variants are separated by ';'. The
FX graph cache is off unless --graph-cache (its key misses the SDPA backend choice, so a cached graph could
stand in for another variant's). OUT/profile_step.json names the device and is rewritten after every variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import re
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402
from sensorium.models.dual_encoder import DualEncoder, TextConfig, VisionConfig  # noqa: E402
from sensorium.nn import TransformerConfig  # noqa: E402
from train_throughput import H100_BF16_DENSE, device_info, reset_peak  # noqa: E402
from sensorium.train.fast import (ContrastiveStep, FastConfig, clip_config, count_flops, sync,  # noqa: E402
                                  synthetic_batch, time_steps)

KINDS = (  # first match wins: attention and convolution kernels also have GEMM-like names
    ("attention", r"flash|fmha|attn|attention|sdpa|dq_to_16bits|dot_do_o"),
    ("convolution", r"fprop|dgrad|wgrad|conv2d|convolution|implicit|nchwtonhwc|nhwctonchw"),
    ("gemm", r"gemm|cutlass|xmma|nvjet|wgmma|cublas|matmul"),
    ("optimizer", r"multi_tensor|adam|foreach"),
    ("triton (fused)", r"^triton"),
    ("memcpy/memset", r"memcpy|memset"),
    ("reduction", r"reduce|softmax|norm"),
)


def kind_of(kernel: str) -> str:
    """The kind of a GPU kernel, from its name."""
    low = kernel.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, low)), "other elementwise")


_MISSING = object()


def _value(text: str, like: Any) -> Any:
    """`text` parsed as the type of `like` (booleans from 1/true/on/yes)."""
    if isinstance(like, bool):
        return text.lower() in ("1", "true", "on", "yes")
    return type(like)(text) if like is not None else text


def parse_variant(text: str) -> tuple[FastConfig, dict[str, Any], dict[str, Any]]:
    """'compile=model,attention=cudnn,inductor.coordinate_descent_tuning=1,model.fused_qkv=0' -> FastConfig
    with those fields, the torch._inductor.config settings (inductor.<name>) to patch while the variant compiles
    and runs, and fields of both towers (model.<name>: their TransformerConfig's, else their own config's)."""
    import torch._inductor.config as inductor_config

    cfg, inductor, model = FastConfig(), {}, {}
    fields = {f.name for f in dataclasses.fields(FastConfig)}
    known = inductor_config.get_config_copy()
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if sep and key.startswith("model."):  # a field of both towers' TransformerConfig or of both tower
            name = key.removeprefix("model.")  # configs, e.g. model.fused_qkv=0, model.prune_last_block=0
            like = getattr(TransformerConfig(), name, getattr(VisionConfig(), name, _MISSING))
            if like is _MISSING or not hasattr(TransformerConfig(), name) and not hasattr(TextConfig(), name):
                raise ValueError(f"variant {text!r}: neither TransformerConfig nor both tower configs have {name!r}")
            model[name] = _value(value, like)
            continue
        if sep and key.startswith("inductor."):
            name = key.removeprefix("inductor.")
            if name not in known:
                raise ValueError(f"variant {text!r}: torch._inductor.config has no {name!r}")
            inductor[name] = _value(value, known[name])
            continue
        if not sep or key not in fields:
            raise ValueError(f"variant {text!r}: {item!r} is not field=value with a FastConfig field "
                             f"({', '.join(sorted(fields))})")
        setattr(cfg, key, _value(value, getattr(cfg, key)))
    return cfg, inductor, model


def kernel_table(prof: torch.profiler.profile, steps: int) -> list[dict[str, Any]]:
    """Per GPU kernel: calls and microseconds per step, with its kind."""
    rows = []
    for evt in prof.key_averages():
        us = getattr(evt, "self_device_time_total", None)
        if us is None:
            us = getattr(evt, "self_cuda_time_total", 0)
        on_device = str(getattr(evt, "device_type", "")).endswith("CUDA")
        annotation = getattr(evt, "is_user_annotation", False) or "#" in evt.key  # e.g. Optimizer.step#AdamW.step
        if not on_device or annotation or us <= 0:
            continue
        rows.append({"kernel": evt.key[:160], "kind": kind_of(evt.key), "us_per_step": us / steps,
                     "calls_per_step": evt.count / steps})
    return sorted(rows, key=lambda r: -r["us_per_step"])


def gap_summary(prof: torch.profiler.profile, steps: int, top: int = 8) -> dict[str, Any]:
    """Where the GPU sat idle within the profiled steps: device activity merged across streams, the gaps between
    activities binned by length (count and ms per step), and the longest gaps with the kernels on either side
    (host-bound stretches show up as a few long gaps; launch latency inside CUDA graphs as many short ones)."""
    spans = []
    for evt in prof.events():
        annotation = getattr(evt, "is_user_annotation", False) or "#" in evt.name
        if str(getattr(evt, "device_type", "")).endswith("CUDA") and not annotation:
            spans.append((evt.time_range.start, evt.time_range.end, evt.name))
    if not spans:
        return {}
    spans.sort()
    gaps, end, last = [], spans[0][1], spans[0][2]
    for start, stop, name in spans[1:]:
        if start > end:
            gaps.append((start - end, last, name))
        if stop > end:
            end, last = stop, name
    bins = {"<5us": (0, 5), "5-20us": (5, 20), "20-100us": (20, 100), ">=100us": (100, float("inf"))}
    return {"activities_per_step": len(spans) / steps,
            "gaps_by_length": {label: {"count_per_step": sum(lo <= g[0] < hi for g in gaps) / steps,
                                       "ms_per_step": sum(g[0] for g in gaps if lo <= g[0] < hi) / 1000 / steps}
                               for label, (lo, hi) in bins.items()},
            "longest_gaps": [{"us": round(g[0], 1), "after": g[1][:100], "before": g[2][:100]}
                             for g in sorted(gaps, reverse=True)[:top]]}


def profile_variant(name: str, cfg: FastConfig, inductor: dict[str, Any], model: dict[str, Any],
                    args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time `cfg`'s step, then profile `--profile-steps` of it; kernel time by kind against the step's wall."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(inductor):
        return _profile_variant(name, cfg, model, args, device) | {"inductor": inductor, "model_overrides": model}


def _profile_variant(name: str, cfg: FastConfig, overrides: dict[str, Any], args: argparse.Namespace,
                     device: torch.device) -> dict[str, Any]:
    model_cfg = clip_config(args.model)
    for tower in (model_cfg.vision, model_cfg.text):
        for key, value in overrides.items():
            setattr(tower.transformer if hasattr(tower.transformer, key) else tower, key, value)
    pixels, ids = synthetic_batch(model_cfg, args.batch_size, device)
    torch.manual_seed(0)
    with device:
        model = DualEncoder(model_cfg).to(device)
    eager = ContrastiveStep(model, FastConfig(bf16=cfg.bf16))
    flops = count_flops(lambda: eager.forward_loss(pixels, ids).backward())
    model.zero_grad(set_to_none=True)
    del eager
    reset_peak(device)
    step = ContrastiveStep(model, cfg)
    t = time_steps(lambda: step(pixels, ids), device, warmup=args.warmup, target_s=args.target_s,
                   max_steps=args.max_steps)
    loss = float(t.pop("last"))
    out: dict[str, Any] = {"variant": name, "config": dataclasses.asdict(cfg), "samples_per_s":
                           args.batch_size / t["step_s"], "step_ms": 1000 * t["step_s"], "steps_timed": t["steps"],
                           "warmup_s": t["warmup_s"], "mfu": flops / t["step_s"] / args.peak_flops,
                           "flops_per_step": flops, "final_loss": loss}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sync(device)
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.profile_steps):
            step(pixels, ids)
        sync(device)
        wall = (time.perf_counter() - start) / args.profile_steps
    kernels = kernel_table(prof, args.profile_steps)
    by_kind: dict[str, float] = defaultdict(float)
    for k in kernels:
        by_kind[k["kind"]] += k["us_per_step"]
    busy_ms = sum(by_kind.values()) / 1000
    out.update({
        "profiled_step_ms": 1000 * wall, "gpu_busy_ms": busy_ms,
        "gpu_idle_fraction": max(0.0, 1 - busy_ms / (1000 * wall)) if busy_ms else None,
        "by_kind_ms": {k: v / 1000 for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "calls_by_kind": {kind: sum(k["calls_per_step"] for k in kernels if k["kind"] == kind) for kind in by_kind},
        "top_kernels": kernels[: args.top], "idle": gap_summary(prof, args.profile_steps)})
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    """Time and profile each variant; write OUT/profile_step.json."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--variants", default="compile=model", help="';'-separated FastConfig field lists")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--target-s", type=float, default=5.0)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--profile-steps", type=int, default=4)
    p.add_argument("--top", type=int, default=25, help="kernels listed per variant")
    p.add_argument("--peak-flops", type=float, default=H100_BF16_DENSE)
    p.add_argument("--graph-cache", action="store_true", help="keep Inductor's FX graph cache on")
    p.add_argument("--blas", default="default", choices=("default", "cublas", "cublaslt"),
                   help="torch.backends.cuda.preferred_blas_library for PyTorch's own matmuls")
    args = p.parse_args(argv)
    if not args.graph_cache:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if args.blas != "default":
        torch.backends.cuda.preferred_blas_library(args.blas)
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"machine": machine(), "device": device_info(device), "torch": torch.__version__,
                           "model": args.model, "batch_size": args.batch_size, "peak_flops": args.peak_flops, "blas": args.blas,
                           "variants": []}
    for name in variants:
        try:
            doc["variants"].append({"status": "ok", **profile_variant(name, *parse_variant(name), args, device)})
        except Exception as err:  # noqa: BLE001 - one failing variant must not lose the others
            doc["variants"].append({"variant": name, "status": "error", "error": f"{type(err).__name__}: {err}"[:2000],
                                    "traceback": traceback.format_exc(limit=-6)[-3000:]})
        r = doc["variants"][-1]
        if r["status"] == "ok":
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in r["by_kind_ms"].items())
            print(f"{name}: {r['samples_per_s']:.0f} samples/s, MFU {100 * r['mfu']:.1f}%, step {r['step_ms']:.1f} ms, "
                  f"GPU busy {r['gpu_busy_ms']:.1f} ms [{kinds}]", flush=True)
        else:
            print(f"{name}: {r['error']}", flush=True)
        (args.out / "profile_step.json").write_text(json.dumps(doc, indent=1))
        gc.collect()
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0 if all(v["status"] == "ok" for v in doc["variants"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
