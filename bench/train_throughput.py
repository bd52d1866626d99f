"""Contrastive training and embedding throughput: Sensorium's DualEncoder at open_clip's ViT-B-16 / ViT-B-32
dimensions against open_clip itself, in one run on one device: same batch, bf16 autocast, fused AdamW,
synthetic data. Training rows report samples/s, MFU (FLOPs of one forward+backward counted by
torch.utils.flop_counter on the eager model, over --peak-flops) and peak memory; embedding rows images/s
and texts/s. Sensorium's training rows are `sensorium train clip`'s own code: the model's configs/clip recipe,
its FastConfig set to the row's variant, then train/clip.py's build_model / build_step / build_feed (the feed with
the recipe's byte-level tokenizer) - what `run_clip` trains with; the bench only times the steps. The fastest
variant's options are those of configs/clip/ViT-B-16-fast.yaml.

    pip install --no-deps -q --target /tmp/ocw .carry/wheels/*.whl   # open_clip: not a Sensorium dependency
    PYTHONPATH=src:/tmp/ocw timeout -k 10 -s INT 265 python3 bench/train_throughput.py --out OUT --time-budget-s 230
    PYTHONPATH=src python3 bench/train_throughput.py --tiny --out /tmp/tp      # CPU plumbing check, seconds

Rows run in order of importance; one that would not fit in what is left of --time-budget-s is recorded as
skipped, one that fails is recorded with its error. OUT/train_throughput.json is rewritten after every row.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch._inductor.config as inductor_config
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _open_clip import import_open_clip  # noqa: E402
from sensorium.models.dual_encoder import DualEncoder  # noqa: E402
from sensorium.train.clip import (  # noqa: E402
    ClipRecipe,
    build_feed,
    build_model,
    build_step,
    build_tokenizer,
    load_recipe,
)
from sensorium.train.clip_models import model_cfg, recipe_path  # noqa: E402
from sensorium.train.fast import (  # noqa: E402
    ContrastiveStep,
    FastConfig,
    accelerate,
    clip_config,
    count_flops,
    sync,
    synthetic_batch,
    time_steps,
)
from sensorium.train.shard_feed import ShardFeed  # noqa: E402
from sensorium.train.trainer import TrainConfig, make_optimizer  # noqa: E402
from shard_feed import jpeg_shards, world_shards  # noqa: E402

H100_BF16_DENSE = 989e12
# the fastest step: each tower compiled, quack MLP, cuDNN/FA4 attention, the text tower on its own stream, one graph
# (the fast section of configs/clip/ViT-B-16-fast.yaml, the recipe `sensorium train clip` runs it from)
STEP_GRAPH = dict(yaml.safe_load(recipe_path("ViT-B-16-fast").read_text())["fast"])
VARIANTS: dict[str, dict[str, Any]] = {  # variant -> FastConfig fields; "<variant>+shards" feeds it from shards
    "eager": {"compile": "none"}, "compile": {"compile": "blocks"}, "compile-model": {"compile": "model"},
    "compile-model+epilogue-mlp": {"compile": "model", "mlp_kernel": "cublaslt"},
    "compile-model+epilogue-mlp+cudagraphs": {"compile": "model", "mlp_kernel": "cublaslt",
                                              "compile_mode": "reduce-overhead"},
    "compile-model+epilogue-mlp+fa4+cudagraphs": {"compile": "model", "mlp_kernel": "cublaslt", "attention": "fa4",
                                                  "compile_mode": "reduce-overhead"},
    "compile-model+epilogue-mlp+cudnn-fa4+cudagraphs": {"compile": "model", "mlp_kernel": "cublaslt",
                                                        "attention": "cudnn+fa4", "compile_mode": "reduce-overhead"},
    "compile-model+quack-mlp+cudnn-fa4+cudagraphs": {"compile": "model", "mlp_kernel": "quack",
                                                     "attention": "cudnn+fa4", "compile_mode": "reduce-overhead"},
    "compile-towers+quack-mlp+cudnn-fa4+step-graph+streams": STEP_GRAPH,
    # "inductor": a torch._inductor.config patch while the row compiles and runs
    "compile-towers+quack-mlp+cudnn-fa4+step-graph+streams+cdt": {
        **STEP_GRAPH, "inductor": {"coordinate_descent_tuning": True}},
    # "towers": fields set in both towers' configs (here: the last block in full, as before it was pruned)
    "compile-towers+quack-mlp+cudnn-fa4+step-graph+streams+full-last-block": {
        **STEP_GRAPH, "towers": {"prune_last_block": False}},
    "compile+checkpoint": {"compile": "blocks", "checkpoint": True},
    # the fastest step with a default install (no optional kernel packages): each tower compiled, the text tower on a
    # second stream, the whole step one CUDA graph; GELU in PyTorch ops or in cuBLASLt GEMM epilogues
    "default:compile-towers+step-graph+streams": {"compile": "towers", "step_graph": True, "tower_streams": True},
    "default:compile-towers+epilogue-mlp+step-graph+streams": {"compile": "towers", "step_graph": True,
                                                               "tower_streams": True, "mlp_kernel": "cublaslt"}}
SHARDS = "+shards"


@dataclass
class Row:
    """One measurement: what it runs and how long it needs at least (skipped when less time is left)."""

    task: str  # train | embed
    impl: str  # sensorium | open_clip
    model: str
    variant: str  # a VARIANTS key, optionally + SHARDS
    min_s: float

    @property
    def name(self) -> str:
        """task/impl/model/variant."""
        return f"{self.task}/{self.impl}/{self.model}/{self.variant}"


def plan(models: list[str], shards: str | None = None) -> list[Row]:
    """Rows in order of importance: per model open_clip eager against Sensorium eager and compiled; then
    open_clip compiled and embedding throughput for the first model, further variants last; with `shards` (a
    variant), that variant's step fed from WebDataset shards too."""
    first, rest = models[0], models[1:]
    rows = []
    for m in models:
        rows += [Row("train", "open_clip", m, "eager", 12), Row("train", "sensorium", m, "eager", 12),
                 Row("train", "sensorium", m, "compile", 45)]
    rows += [Row("train", "open_clip", first, "compile", 75), Row("embed", "open_clip", first, "eager", 8),
             Row("embed", "sensorium", first, "eager", 8), Row("train", "sensorium", first, "compile-model", 75)]
    rows += [Row("train", "open_clip", m, "compile", 70) for m in rest]
    rows += [Row("embed", "sensorium", first, "compile", 40), Row("embed", "open_clip", first, "compile", 50),
             Row("train", "sensorium", first, "compile+checkpoint", 40),
             Row("train", "sensorium", first, "compile-model+epilogue-mlp", 75),
             Row("train", "sensorium", first, "compile-model+epilogue-mlp+cudagraphs", 75),
             Row("train", "sensorium", first, "compile-model+epilogue-mlp+fa4+cudagraphs", 75),
             Row("train", "sensorium", first, "compile-model+epilogue-mlp+cudnn-fa4+cudagraphs", 75),
             Row("train", "sensorium", first, "compile-model+quack-mlp+cudnn-fa4+cudagraphs", 75),
             Row("train", "sensorium", first, "compile-towers+quack-mlp+cudnn-fa4+step-graph+streams", 75),
             Row("train", "sensorium", first, "compile-towers+quack-mlp+cudnn-fa4+step-graph+streams+cdt", 150),
             Row("train", "sensorium", first, "compile-towers+quack-mlp+cudnn-fa4+step-graph+streams+full-last-block",
                 75),
             Row("train", "sensorium", first, "default:compile-towers+step-graph+streams", 75),
             Row("train", "sensorium", first, "default:compile-towers+epilogue-mlp+step-graph+streams", 75)]
    if shards:  # real data right after the synthetic row it is compared with
        at = next(i for i, r in enumerate(rows) if r.variant == shards and r.impl == "sensorium") + 1
        rows.insert(at, Row("train", "sensorium", first, shards + SHARDS, 90))
    return rows


class Context:
    """Settings shared by all rows."""

    def __init__(self, args: argparse.Namespace, device: torch.device, open_clip: Any, deadline: float,
                 shards: Path | None = None):
        self.args, self.device, self.open_clip, self.deadline = args, device, open_clip, deadline
        self.shards = shards

    def autocast(self):
        """bf16 autocast on this device (disabled by --no-amp)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=not self.args.no_amp)

    def timing(self, fn: Callable[[], Any], target_s: float | None = None) -> dict[str, Any]:
        """time_steps with this run's warmup, target and deadline."""
        return time_steps(fn, self.device, warmup=self.args.warmup, target_s=target_s or self.args.target_s,
                          max_steps=self.args.max_steps, deadline=self.deadline)


def _open_clip_model(ctx: Context, model: str) -> torch.nn.Module:
    with ctx.device:  # initialise on the device: seconds saved per row at ViT-B size
        return ctx.open_clip.model.CLIP(**model_cfg(model)).to(ctx.device)


def row_recipe(row: Row, ctx: Context, fast: dict[str, Any], towers: dict[str, Any]) -> ClipRecipe:
    """The `sensorium train clip` recipe of a Sensorium training row: the model's configs/clip file with the
    bench's batch, the row's FastConfig (and tower options), the shards and loader settings, byte-level tokens."""
    args = ctx.args
    recipe = load_recipe(recipe_path(row.model), [])
    unknown = set(towers) - {"prune_last_block"}
    if unknown:
        raise ValueError(f"tower options {sorted(unknown)}: the recipe sets only prune_last_block")
    recipe.prune_last_block = towers.get("prune_last_block", True)
    recipe.fast = FastConfig(**fast, compile_backend=args.compile_backend, bf16=not args.no_amp)
    recipe.train.batch_size, recipe.tokenizer.kind = args.batch_size, "bytes"
    recipe.data.train = str(ctx.shards) if ctx.shards is not None else ""
    recipe.data.workers, recipe.data.pin = args.loader_workers, args.loader_pin == "on"
    recipe.data.thread = args.loader_thread == "on"
    return recipe


def _sensorium_model(ctx: Context, cfg) -> DualEncoder:
    with ctx.device:
        return DualEncoder(cfg).to(ctx.device)


def _open_clip_loss_fn(ctx: Context, module: torch.nn.Module, pixels, ids) -> Callable[[], torch.Tensor]:
    """open_clip's training forward: towers and ClipLoss under autocast (as its train.py does)."""
    loss = ctx.open_clip.loss.ClipLoss()

    def forward_loss() -> torch.Tensor:
        with ctx.autocast():
            out = module(pixels, ids)
            if isinstance(out, dict):
                out = (out["image_features"], out["text_features"], out["logit_scale"])
            return loss(out[0], out[1], out[2])
    return forward_loss


def reset_peak(device: torch.device) -> None:
    """Forget the eager FLOP-counting step's memory, so a row's peak is that of the steps it times."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def train_row(row: Row, ctx: Context) -> dict[str, Any]:
    """Samples/s, MFU and peak memory of full training steps (forward, loss, backward, fused AdamW)."""
    args, dev = ctx.args, ctx.device
    real = row.variant.endswith(SHARDS)
    fast = dict(VARIANTS[row.variant.removesuffix(SHARDS)])
    inductor = fast.pop("inductor", {})
    towers = fast.pop("towers", {})
    extra: dict[str, Any] = {"inductor": inductor} if inductor else {}
    extra.update({"tower_config": towers} if towers else {})
    if fast.get("step_graph") and dev.type != "cuda":  # the CPU plumbing run (--tiny): a CUDA graph needs CUDA
        fast["step_graph"] = False
        extra["note"] = "step_graph off: no CUDA device"
    if row.impl == "sensorium":  # sensorium train clip's recipe, model, step and feed
        recipe = row_recipe(row, ctx, fast, towers)
        tokenizer = build_tokenizer(recipe)
        model = build_model(recipe, dev, tokenizer)
        cfg = model.cfg
    else:
        cfg = clip_config(row.model)
    pixels, ids = synthetic_batch(cfg, args.batch_size, dev)
    if real:
        feed = build_feed(recipe, cfg, dev, tokenizer)
        extra.update(loader_rate(feed, args.batch_size, dev, args.target_s))
    if row.impl == "sensorium":
        eager = ContrastiveStep(model, FastConfig(bf16=not args.no_amp))  # FLOPs of the eager step (measuring only)
        flops = count_flops(lambda: eager.forward_loss(pixels, ids).backward())
        model.zero_grad(set_to_none=True)
        del eager
        reset_peak(dev)
        step = build_step(recipe, model)
        run = (lambda: step(*next(feed))) if real else (lambda: step(pixels, ids))  # noqa: E731
    else:
        if row.variant not in ("eager", "compile"):  # open_clip's own option: torch.compile of the model
            raise ValueError(f"open_clip rows support eager and compile, not {row.variant}")
        model = _open_clip_model(ctx, row.model)
        flops = count_flops(lambda: _open_clip_loss_fn(ctx, model, pixels, ids)().backward())
        model.zero_grad(set_to_none=True)
        reset_peak(dev)
        module = model if row.variant == "eager" else torch.compile(model, backend=args.compile_backend)
        forward_loss = _open_clip_loss_fn(ctx, module, pixels, ids)
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], TrainConfig(lr=5e-4))

        def run() -> torch.Tensor:
            loss = forward_loss()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()
    try:
        with inductor_config.patch(inductor):
            t = ctx.timing(run)
    finally:
        if real:
            feed.close()
    loss = float(t.pop("last"))
    if not torch.isfinite(torch.tensor(loss)):
        raise FloatingPointError(f"loss became {loss}")
    per_s = args.batch_size / t["step_s"]
    return {"samples_per_s": per_s, "step_ms": 1000 * t["step_s"], "steps_timed": t["steps"],
            "warmup_s": t["warmup_s"], "flops_per_sample": flops / args.batch_size,
            "tflops_per_s": flops / t["step_s"] / 1e12, "mfu": flops / t["step_s"] / args.peak_flops,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "final_loss": loss, **extra}


def loader_rate(feed: ShardFeed, batch: int, device: torch.device, seconds: float) -> dict[str, Any]:
    """Samples/s of the data path alone (workers decoding, pinned copy, normalisation on the device), timed after
    a first wave of one batch per worker (start-up), so the training row can say whether data or compute limits
    it."""
    start = time.perf_counter()
    next(feed)
    first = time.perf_counter() - start
    for _ in range(feed.workers):
        next(feed)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < 2 * seconds or n < 3:
        next(feed)
        n += 1
    sync(device)
    return {"loader_samples_per_s": n * batch / (time.perf_counter() - t), "loader_first_batch_s": first,
            "loader_workers": feed.workers, "data": str(feed_source(feed))}


def feed_source(feed: ShardFeed) -> str:
    """Where a feed reads from (for the JSON): its folder and unit count."""
    units = feed.dataset.source.units()
    return f"{Path(units[0]).parent} ({len(units)} shards)" if units else "no shards"


def embed_row(row: Row, ctx: Context) -> dict[str, Any]:
    """Images/s and texts/s of L2-normalised embeddings under inference_mode and autocast."""
    args, dev = ctx.args, ctx.device
    cfg = clip_config(row.model)
    pixels, ids = synthetic_batch(cfg, args.embed_batch, dev)
    compile_mode = VARIANTS[row.variant]["compile"]
    if row.impl == "sensorium":
        model = _sensorium_model(ctx, cfg).eval()
        accelerate(model, FastConfig(compile=compile_mode, compile_backend=args.compile_backend))
        image, text = model.encode_image, model.encode_text
    else:
        model = _open_clip_model(ctx, row.model).eval()
        image, text = model.encode_image, model.encode_text
        if compile_mode != "none":
            image, text = (torch.compile(f, backend=args.compile_backend) for f in (image, text))
    out: dict[str, Any] = {"batch": args.embed_batch}
    with torch.inference_mode(), ctx.autocast():
        for name, fn, x in (("images", image, pixels), ("texts", text, ids)):
            t = ctx.timing(lambda: fn(x, normalize=True), target_s=args.target_s / 2)
            out[f"{name}_per_s"] = args.embed_batch / t["step_s"]
            out[f"{name}_warmup_s"] = t["warmup_s"]
    return out


def run_row(row: Row, ctx: Context) -> dict[str, Any]:
    """Run one row in isolation: its errors are recorded, its memory and compiled graphs released."""
    from torch._dynamo.utils import counters

    record: dict[str, Any] = {"name": row.name, **asdict(row)}
    if row.impl == "open_clip" and ctx.open_clip is None:
        return {**record, "status": "skipped", "reason": "open_clip not importable"}
    counters.clear()
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    start = time.perf_counter()
    try:
        record.update(train_row(row, ctx) if row.task == "train" else embed_row(row, ctx))
        record["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - one failing row must not lose the others
        record.update(status="error", error=f"{type(err).__name__}: {err}"[:2000],
                      traceback=traceback.format_exc(limit=-8)[-4000:])
    record["wall_s"] = time.perf_counter() - start
    if ctx.device.type == "cuda":
        record["peak_mem_gib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30
    if row.variant != "eager":
        record["dynamo"] = {"unique_graphs": counters["stats"].get("unique_graphs", 0),
                            "graph_breaks": sum(counters["graph_break"].values())}
    gc.collect()
    torch._dynamo.reset()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return record


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: open_clip eager and best, Sensorium best, and the speed-ups between them."""
    out: dict[str, Any] = {}
    ok = [r for r in rows if r.get("status") == "ok"]
    for model in dict.fromkeys(r["model"] for r in ok):
        train = [r for r in ok if r["model"] == model and r["task"] == "train"]
        oc = [r for r in train if r["impl"] == "open_clip"]
        ours = [r for r in train if r["impl"] == "sensorium" and not r["variant"].endswith(SHARDS)]
        s: dict[str, Any] = {}
        for real in (r for r in train if r["variant"].endswith(SHARDS)):
            same = [r for r in ours if r["variant"] == real["variant"].removesuffix(SHARDS)]
            s["shards_samples_per_s"] = real["samples_per_s"]
            s["shards_loader_only_samples_per_s"] = real.get("loader_samples_per_s")
            if same:
                s["shards_fraction_of_synthetic"] = real["samples_per_s"] / same[0]["samples_per_s"]
        if ours:
            best = max(ours, key=lambda r: r["samples_per_s"])
            s.update(sensorium_best=best["variant"], sensorium_samples_per_s=best["samples_per_s"],
                     sensorium_mfu=best["mfu"], sensorium_flops_per_sample=best["flops_per_sample"])
            if oc:  # the last block computes only the pooled rows: fewer FLOPs counted for the same embeddings
                s["sensorium_mfu_at_open_clip_flops"] = \
                    best["mfu"] * oc[0]["flops_per_sample"] / best["flops_per_sample"]
        for label, pick in (("eager", [r for r in oc if r["variant"] == "eager"]), ("best", oc)):
            if pick:
                ref = max(pick, key=lambda r: r["samples_per_s"])
                s[f"open_clip_{label}_samples_per_s"] = ref["samples_per_s"]
                if ours:
                    s[f"speedup_vs_open_clip_{label}"] = s["sensorium_samples_per_s"] / ref["samples_per_s"]
        embed = {r["impl"]: r for r in ok if r["model"] == model and r["task"] == "embed" and r["variant"] == "eager"}
        if len(embed) == 2:
            for kind in ("images", "texts"):
                s[f"embed_{kind}_ratio_eager"] = embed["sensorium"][f"{kind}_per_s"] / embed["open_clip"][f"{kind}_per_s"]
        out[model] = s
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows."""
    lines = ["| row | status | samples/s | MFU | images/s | texts/s | peak GiB | warmup s |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda r, k, f: format(r[k], f) if isinstance(r.get(k), (int, float)) else "-"  # noqa: E731
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if isinstance(r.get("mfu"), float) else "-"
        lines.append(f"| {r['name']} | {r['status']} | {fmt(r, 'samples_per_s', ',.0f')} | {mfu} | "
                     f"{fmt(r, 'images_per_s', ',.0f')} | {fmt(r, 'texts_per_s', ',.0f')} | "
                     f"{fmt(r, 'peak_mem_gib', '.1f')} | {fmt(r, 'warmup_s', '.1f')} |")
    return "\n".join(lines)


def device_info(device: torch.device) -> dict[str, Any]:
    """Name, compute capability and memory of the device."""
    if device.type != "cuda":
        return {"type": device.type, "name": "cpu"}
    p = torch.cuda.get_device_properties(device)
    return {"type": "cuda", "name": p.name, "capability": f"{p.major}.{p.minor}",
            "memory_gib": p.total_memory / 2**30, "count": torch.cuda.device_count()}


def main(argv: list[str] | None = None) -> int:
    """Run the planned rows within the time budget; write JSON (and a Markdown table) to --out."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for train_throughput.json / .md")
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU in seconds (plumbing check)")
    p.add_argument("--models", default=None, help="comma list (default ViT-B-16,ViT-B-32; tiny with --tiny)")
    p.add_argument("--only", default="", help="comma list of substrings: run only rows whose name has one "
                   "(one ending in $: whose name ends with it)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default 256; 8 with --tiny)")
    p.add_argument("--embed-batch", type=int, default=None, help="embedding batch (default 1024; 8 with --tiny)")
    p.add_argument("--time-budget-s", type=float, default=270.0, help="skip rows that would not fit")
    p.add_argument("--target-s", type=float, default=None, help="timed seconds per row (default 3)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--peak-flops", type=float, default=H100_BF16_DENSE, help="for MFU (H100 dense bf16)")
    p.add_argument("--compile-backend", default=None, help="inductor (default; aot_eager with --tiny)")
    p.add_argument("--no-amp", action="store_true", help="float32 instead of bf16 autocast")
    p.add_argument("--device", default=None)
    p.add_argument("--shards", default=None, help="WebDataset shards (png|jpg + txt) for the real-data row")
    p.add_argument("--world-shards", type=int, default=0,
                   help="write this many Sensorium World samples (image + caption) at the model's image size into "
                        "OUT/world-shards first and use them for the real-data row")
    p.add_argument("--world-jpeg", type=int, default=0, metavar="QUALITY",
                   help="re-encode the World shards' PNG images as JPEG at this quality (OUT/world-shards-jpg)")
    p.add_argument("--shards-variant", default="compile-model", choices=list(VARIANTS),
                   help="the Sensorium variant whose step the real-data row feeds from the shards")
    p.add_argument("--loader-workers", type=int, default=None, help="decoding processes (default: CPUs - 2)")
    p.add_argument("--loader-pin", choices=["on", "off"], default="off", help="pinned host memory for the copies")
    p.add_argument("--loader-thread", choices=["on", "off"], default="on",
                   help="copy and normalise batches in a background thread on a side CUDA stream")
    args = p.parse_args(argv)
    start = time.perf_counter()
    tiny = args.tiny
    args.batch_size = args.batch_size or (8 if tiny else 256)
    args.embed_batch = args.embed_batch or (8 if tiny else 1024)
    args.target_s = args.target_s or (0.2 if tiny else 3.0)
    args.compile_backend = args.compile_backend or ("aot_eager" if tiny else "inductor")
    device = torch.device(args.device or ("cpu" if tiny or not torch.cuda.is_available() else "cuda"))
    if tiny and device.type == "cpu":
        torch.set_num_threads(1)  # tiny shapes gain nothing from threads; on shared cores they stall on barriers
    models = (args.models or ("tiny" if tiny else "ViT-B-16,ViT-B-32")).split(",")
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # the patch-embedding convolution picks its fastest algorithm
    open_clip, oc_note = import_open_clip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        from _machine import machine

        host = machine()
    except Exception as err:  # noqa: BLE001 - the machine block is informative only
        host = {"error": str(err)}
    doc: dict[str, Any] = {
        "bench": "train_throughput", "status": "running", "command": " ".join(sys.argv),
        "device": device_info(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "open_clip": getattr(open_clip, "__version__", None), "open_clip_note": oc_note, "machine": host,
        "settings": {"batch_size": args.batch_size, "embed_batch": args.embed_batch,
                     "amp": "none" if args.no_amp else "bf16 autocast", "optimizer": "AdamW (fused on CUDA)",
                     "data": "synthetic, on device", "peak_flops": args.peak_flops, "tf32": True,
                     "cudnn_benchmark": True,
                     "compile_backend": args.compile_backend, "time_budget_s": args.time_budget_s,
                     "target_s": args.target_s, "warmup_steps": args.warmup,
                     "mfu_flops": "torch.utils.flop_counter, one eager forward+backward (no recompute)"},
        "rows": []}
    import os

    args.loader_workers = args.loader_workers if args.loader_workers is not None else (
        0 if tiny else max(1, (os.cpu_count() or 2) - 2))
    shards = Path(args.shards) if args.shards else None
    if args.world_shards:
        shards = world_shards(out / "world-shards", args.world_shards, clip_config(models[0]).vision.image_size)
        if args.world_jpeg:
            shards = jpeg_shards(shards, out / "world-shards-jpg", args.world_jpeg)
            doc["settings"]["world_jpeg_quality"] = args.world_jpeg
        doc["settings"]["world_shards"] = {"n": args.world_shards, "seconds": round(time.perf_counter() - start, 1)}
    if shards is not None:
        doc["settings"]["shards"] = str(shards)
        doc["settings"]["loader_workers"] = args.loader_workers
        doc["settings"]["loader_pin_memory"] = args.loader_pin
        doc["settings"]["loader_thread"] = args.loader_thread
    rows = [r for r in plan(models, args.shards_variant if shards is not None else None)
            if not args.only or any(r.name.endswith(s[:-1]) if s.endswith("$") else s in r.name
                                    for s in args.only.split(","))]
    deadline = start + args.time_budget_s

    def save() -> None:
        doc["elapsed_s"] = time.perf_counter() - start
        doc["summary"] = summarize(doc["rows"])
        tmp = out / "train_throughput.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(out / "train_throughput.json")

    ctx = Context(args, device, open_clip, deadline, shards)
    for row in rows:
        min_s = 0.0 if tiny else row.min_s
        if time.perf_counter() + min_s > deadline:
            doc["rows"].append({"name": row.name, **asdict(row), "status": "skipped",
                                "reason": f"time budget: {deadline - time.perf_counter():.0f}s left, "
                                          f"row needs ~{min_s:.0f}s"})
            save()
            continue
        doc["running"] = row.name
        save()
        try:
            record = run_row(row, ctx)
        except KeyboardInterrupt:  # `timeout -s INT`: keep what was measured, name the row cut short
            doc["rows"].append({"name": row.name, **asdict(row), "status": "interrupted"})
            doc["status"] = "interrupted"
            save()
            return 130
        doc["rows"].append(record)
        print(f"[{time.perf_counter() - start:6.1f}s] {row.name}: {record['status']} "
              + (record.get("error", "") or json.dumps({k: round(v, 3) for k, v in record.items()
                                                        if k.endswith("_per_s") or k == "mfu"})), flush=True)
        save()
    doc.pop("running", None)
    doc["status"] = "done"
    save()
    md = table(doc["rows"])
    (out / "train_throughput.md").write_text(md + "\n")
    print(md)
    print(json.dumps(doc["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
