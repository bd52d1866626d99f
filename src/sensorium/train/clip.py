"""`sensorium train clip`: contrastive training of a CLIP-style dual encoder from WebDataset shards (png|jpg + txt)
with the fast step (train/fast.py), on one CPU or GPU or under torchrun (DDP / FSDP2), resumable bit for bit.

A `ClipRecipe` (YAML + dotted overrides; configs/clip/) names an open_clip-sized model, the data, the tokenizer,
optimisation and the fast step's options. `run_clip` trains for a fixed number of steps and writes into the run
directory: recipe.yaml, tokenizer.json, checkpoints/clip/step-N (model, optimizer, step, data position, RNG),
metrics.jsonl, loss_curve.png, summary.json and model/ (a `sensorium-clip` directory that `sensorium.load` reads and
`sensorium checkpoint export --to open_clip` converts). `build_model` / `build_step` / `build_feed` are the pieces
`run_clip` is made of; bench/train_throughput.py times the same ones."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import distributed as dist
from torch import nn

from sensorium.core.config import checked, load_config, save_config, to_dict
from sensorium.core.lock import run_lock
from sensorium.core.progress import progress_bar
from sensorium.models.dual_encoder import DualEncoder, DualEncoderConfig
from sensorium.train.captions import (
    KINDS,
    CaptionTokens,
    byte_tokenizer,
    file_tokenizer,
    read_captions,
    special_ids,
    train_caption_bpe,
)
from sensorium.train.clip_models import clip_config, model_cfg
from sensorium.train.clip_state import Checkpointer, ValidationSet, check_same_run, write_model
from sensorium.train.distributed import STRATEGIES, init, wrap
from sensorium.train.fast import ContrastiveStep, FastConfig
from sensorium.train.interrupt import StopSignals, TrainingInterrupted
from sensorium.train.shard_feed import ShardFeed
from sensorium.train.trainer import TrainConfig, cosine_lr

log = logging.getLogger(__name__)
STAGE = "clip"


@dataclass
class ClipData:
    """Where the image-caption pairs come from and how they are read."""

    train: str = ""  # WebDataset shards (folder, glob or brace pattern) holding png|jpg + txt per sample
    val: str = ""  # optional held-out shards: image<->text retrieval R@K at eval_every and at the end
    val_samples: int = 1000  # the first this many val samples (kept in memory)
    workers: int = 0  # decoding + tokenizing processes per rank (0: the feeder thread does it)
    prefetch: int = 4  # batches each worker prepares ahead
    thread: bool = True  # copy and normalise batches on the device from a background thread
    depth: int = 3  # batches the thread keeps ready
    pin: bool = False  # pinned host memory for the copies (slower here: see ShardFeed)


@dataclass
class ClipTokenizer:
    """The caption tokenizer, saved as tokenizer.json in the run and the model."""

    kind: str = "bpe"  # bpe (byte-level BPE learned from the training captions) | bytes | file
    path: str = ""  # kind=file: a tokenizer.json, or a folder holding one
    vocab_size: int = 0  # bpe: at most this many ids; 0 = the text tower's vocab_size
    min_frequency: int = 2  # bpe: merges seen fewer times are not learned
    captions: int = 100000  # bpe: learn from the first this many training captions


@dataclass
class ClipTrain:
    """Optimisation: a fixed number of steps, AdamW, linear warm-up then cosine decay."""

    steps: int = 1000
    batch_size: int = 256  # per rank and step
    lr: float = 5e-4
    weight_decay: float = 0.2
    warmup: int = 100
    grad_clip: float = 0.0  # 0: no clipping
    accum: int = 1  # micro-batches per step (same batch, less activation memory)
    seed: int = 0
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10  # the loss is read from the device only here (mean of the window)
    eval_every: int = 0  # validation retrieval every this many steps (0: at the end only; needs data.val)
    # safety stop (e.g. a job's wall-clock limit), checked at log steps: when this call has trained this many
    # seconds, checkpoint, write the model and stop; the same command resumes
    time_budget_s: float = 0.0  # 0: none
    timeout_s: float = 600.0  # rendezvous and collective timeout under torchrun


@dataclass
class ClipRecipe:
    """One `sensorium train clip` run."""

    # an open_clip model config {embed_dim, vision_cfg, text_cfg} or the name of a configs/clip file holding one
    # (typed Any so that overrides reach inside the mapping: model.vision_cfg.layers=6)
    model: Any = checked("", replace=True)
    prune_last_block: bool = True  # the last block computes only the pooled rows: same embeddings, less work
    tokenizer: ClipTokenizer = field(default_factory=ClipTokenizer)
    data: ClipData = field(default_factory=ClipData)
    train: ClipTrain = field(default_factory=ClipTrain)
    fast: FastConfig = field(default_factory=FastConfig)  # the step's speed options (lr etc. live in train)
    strategy: str = "none"  # none | ddp | fsdp (under torchrun)
    device: str = "auto"  # auto (this rank's GPU if any) | cuda | cpu
    threads: int = 0  # torch CPU threads (0: torch's default)

    def validate(self) -> None:
        """The config loader's hook: `check_recipe`."""
        check_recipe(self)


OPTIMISATION = {"lr": "lr", "weight_decay": "weight_decay", "grad_clip": "grad_clip", "accum": "accum"}


def check_recipe(recipe: ClipRecipe) -> None:
    """One clear error per mistake a recipe can hold."""
    if not recipe.model:
        raise ValueError("the recipe names no model: pass --config configs/clip/<name>.yaml or model=ViT-B-32 "
                         "(configs/clip holds ViT-B-32, ViT-B-16, ViT-L-14, tiny)")
    model_cfg(recipe.model)  # an unknown name or a malformed mapping fails here, naming the known ones
    default = FastConfig()
    for key, target in OPTIMISATION.items():
        if getattr(recipe.fast, key) != getattr(default, key):
            raise ValueError(f"fast.{key}={getattr(recipe.fast, key)!r}: set train.{target} instead (the fast "
                             f"section holds only speed options)")
    if recipe.tokenizer.kind not in KINDS:
        raise ValueError(f"tokenizer.kind={recipe.tokenizer.kind!r}; expected one of {', '.join(KINDS)}")
    if recipe.strategy not in STRATEGIES:
        raise ValueError(f"strategy={recipe.strategy!r}; expected one of {', '.join(STRATEGIES)}")
    t = recipe.train
    for name in ("steps", "batch_size", "accum", "ckpt_every", "log_every", "keep_checkpoints"):
        if getattr(t, name) < 1:
            raise ValueError(f"train.{name}={getattr(t, name)} must be >= 1")
    if t.batch_size % t.accum:
        raise ValueError(f"train.batch_size={t.batch_size} does not split into train.accum={t.accum} micro-batches")


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ClipRecipe:
    """A ClipRecipe from YAML (configs/clip/) and dotted overrides, checked (`ClipRecipe.validate`)."""
    return load_config(ClipRecipe, path, overrides)


def build_tokenizer(recipe: ClipRecipe, run_dir: Path | None = None) -> Any:
    """The caption tokenizer (`tokenizers.Tokenizer`): run_dir/tokenizer.json if the run has one (a resumed run
    keeps its vocabulary), else made as `recipe.tokenizer` says and saved there."""
    saved = run_dir / "tokenizer.json" if run_dir is not None else None
    if saved is not None and saved.is_file():
        return file_tokenizer(saved)
    spec = recipe.tokenizer
    if spec.kind == "bytes":
        tok = byte_tokenizer()
    elif spec.kind == "file":
        tok = file_tokenizer(spec.path)
    else:
        if not recipe.data.train:
            raise ValueError("tokenizer.kind=bpe learns from the training captions: set data.train")
        vocab = spec.vocab_size or clip_config(recipe.model).text.vocab_size
        captions = read_captions(recipe.data.train, spec.captions)
        if not captions:
            raise ValueError(f"data.train={recipe.data.train!r}: no captions (.txt members) to learn a tokenizer from")
        tok = train_caption_bpe(captions, vocab, spec.min_frequency)
        log.info("learned a %d-token BPE from %d captions", tok.get_vocab_size(), len(captions))
    special_ids(tok)  # a clear error now for a tokenizer the text tower cannot pool
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tok.save(str(saved))
    return tok


def model_config(recipe: ClipRecipe, tokenizer: Any | None = None) -> DualEncoderConfig:
    """The DualEncoderConfig of the recipe's model; with a tokenizer, the text tower pools at its end token
    (open_clip's `eos` pool) and pads with its pad id."""
    cfg = clip_config(recipe.model)
    for tower in (cfg.vision, cfg.text):
        tower.prune_last_block = recipe.prune_last_block
    if tokenizer is not None:
        pad, end = special_ids(tokenizer)
        if tokenizer.get_vocab_size() > cfg.text.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} ids but the text tower only "
                             f"{cfg.text.vocab_size} (model text_cfg.vocab_size): lower tokenizer.vocab_size")
        cfg.text.pool, cfg.text.eos_token_id, cfg.text.pad_token_id = "eos", end, pad
    return cfg


def init_weights(model: DualEncoder) -> DualEncoder:
    """Weights for training from scratch: the image tower's class and position embeddings and projection drawn as
    open_clip's VisionTransformer draws them (normal, std width^-1/2), the text positions as its TextTransformer
    (std 0.01); every other weight keeps PyTorch's default. open_clip's scaled text init (token embeddings std
    0.02, projection std width^-1/2) left tiny World runs at the chance loss ln(batch) for 100-200+ steps longer
    (docs/train-clip.md)."""
    v, t = model.vision, model.text
    scale = v.cfg.transformer.dim ** -0.5
    with torch.no_grad():
        if v.class_embed is not None:
            v.class_embed.normal_(0, scale)
        v.pos_embed.normal_(0, scale)
        if v.proj is not None:
            v.proj.weight.normal_(0, scale)
        t.pos_embed.normal_(0, 0.01)
    return model


def build_model(recipe: ClipRecipe, device: torch.device | str, tokenizer: Any | None = None) -> DualEncoder:
    """The recipe's DualEncoder, initialised from `train.seed` as open_clip does, on `device`."""
    cfg = model_config(recipe, tokenizer)
    torch.manual_seed(recipe.train.seed)
    with torch.device(device):
        return init_weights(DualEncoder(cfg))


def step_config(recipe: ClipRecipe) -> FastConfig:
    """The fast step's config: the recipe's speed options plus train's optimisation settings."""
    t = recipe.train
    return dataclasses.replace(recipe.fast, lr=t.lr, weight_decay=t.weight_decay, grad_clip=t.grad_clip, accum=t.accum)


def build_step(recipe: ClipRecipe, model: DualEncoder, wrap_fn: Callable[[nn.Module], nn.Module] | None = None
               ) -> ContrastiveStep:
    """The ContrastiveStep `run_clip` trains with (under DDP/FSDP2 when `wrap_fn` is given). With step_graph the
    learning rate is a device tensor, so the captured optimizer step follows the schedule."""
    step = ContrastiveStep(model, step_config(recipe), wrap=wrap_fn)
    if recipe.fast.step_graph:
        device = next(model.parameters()).device
        for group in step.optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
    return step


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Write the scheduled learning rate into every group (in place where it is a device tensor)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def _lr_as(optimizer: torch.optim.Optimizer, device: torch.device | None) -> None:
    """Every group's learning rate as a float (`device` None) or as a tensor on `device` (the step graph's)."""
    for group in optimizer.param_groups:
        value = float(group["lr"])
        group["lr"] = value if device is None else torch.tensor(value, dtype=torch.float32, device=device)


def build_feed(recipe: ClipRecipe, cfg: DualEncoderConfig, device: torch.device | str, tokenizer: Any | None = None,
               state: dict[str, Any] | None = None) -> ShardFeed:
    """The shard feed of `data.train` for a model of `cfg` (captions through `tokenizer`; byte tokens without)."""
    d = recipe.data
    if not d.train:
        raise ValueError("no training data: set data.train to WebDataset shards (png|jpg + txt per sample)")
    tokenize = CaptionTokens(tokenizer, cfg.text.context_length) if tokenizer is not None else None
    return ShardFeed(d.train, cfg, recipe.train.batch_size, device, workers=d.workers, prefetch=d.prefetch,
                     seed=recipe.train.seed, pin=d.pin, thread=d.thread, depth=d.depth, tokenize=tokenize, state=state)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _prepare_run(recipe: ClipRecipe, run: Path, rank: int, resuming: bool) -> Any:
    """Rank 0 checks a resumed run's recipe, writes recipe.yaml and the tokenizer; every rank then reads it."""
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        if resuming and (run / "recipe.yaml").is_file():
            check_same_run(run / "recipe.yaml", to_dict(recipe))
        save_config(recipe, run / "recipe.yaml")
        build_tokenizer(recipe, run)
    _barrier()
    return build_tokenizer(recipe, run)


def _agree_stop(budget_s: float, elapsed_s: float, signum: int | None, device: torch.device) -> tuple[bool, int]:
    """(past the time budget, a stop signal's number or 0), agreed by every rank (any rank's decides), so that all
    of them checkpoint and stop at the same step."""
    flags = torch.tensor([float(bool(budget_s) and elapsed_s > budget_s), float(signum or 0)], device=device)
    if dist.is_initialized():
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    over, sig = flags.tolist()
    return bool(over), int(sig)


def run_clip(recipe: ClipRecipe, run_dir: str | Path, progress: bool = True, stop_after: int | None = None
             ) -> dict[str, Any]:
    """Train (or resume) the recipe into `run_dir`; returns the summary (also summary.json). One writer per run
    directory (core.lock). SIGINT/SIGTERM: checkpoint at the next step (at the next log step under torchrun, where
    the ranks agree) and raise TrainingInterrupted. `stop_after`: leave after this many steps of this call without a
    checkpoint, as a killed run would (for resume tests)."""
    check_recipe(recipe)
    run = Path(run_dir)
    owns_group = not dist.is_initialized()
    rank, world, device = init(recipe.train.timeout_s, recipe.device)
    try:
        with run_lock(run), StopSignals() as stop:
            return _train(recipe, run, rank, world, device, stop, progress, stop_after)
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(recipe: ClipRecipe, run: Path, rank: int, world: int, device: torch.device, stop: StopSignals,
           progress: bool, stop_after: int | None) -> dict[str, Any]:
    """run_clip's body, under the run lock and the stop-signal handler."""
    t = recipe.train
    threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    feed = None
    try:
        ckpt = Checkpointer(run / "checkpoints" / STAGE, t.keep_checkpoints, rank)
        tokenizer = _prepare_run(recipe, run, rank, ckpt.any())
        model = build_model(recipe, device, tokenizer)
        step = build_step(recipe, model, (lambda p: wrap(p, recipe.strategy, device)) if dist.is_initialized() else None)
        # torch's state-dict loader first steps the empty optimizer with lr 0 (a CPU tensor where lr is a tensor,
        # which a fused CUDA AdamW would refuse): floats while loading, device tensors again for the step graph
        _lr_as(step.optimizer, None)
        resumed = ckpt.resume(model, step.optimizer, device, run / "metrics.jsonl", STAGE)
        start, elapsed_before = (resumed["step"], resumed["elapsed"]) if resumed else (0, 0.0)
        _lr_as(step.optimizer, device if recipe.fast.step_graph else None)
        feed = build_feed(recipe, model.cfg, device, tokenizer, resumed["data"][rank] if resumed else None)
        val = ValidationSet(recipe.data.val, recipe.data.val_samples, tokenizer, model.cfg) if recipe.data.val else None
        schedule = TrainConfig(steps=t.steps, lr=t.lr, warmup=t.warmup)
        bar = progress_bar(total=t.steps, initial=start, desc="train clip", unit="step",
                           disable=not progress or rank != 0)
        summary: dict[str, Any] = {"status": "done", "steps": t.steps, "world": world, "device": str(device),
                                   "resumed_from": start if resumed else None}
        window: list[torch.Tensor] = []
        begin = window_start = time.perf_counter()
        first_loss: float | None = None
        last: dict[str, Any] = {}
        i = start
        while i < t.steps:
            set_lr(step.optimizer, cosine_lr(i, schedule))
            window.append(step(*next(feed)))
            i += 1
            due = not (i % t.log_every and i % t.ckpt_every and i != t.steps and not (t.eval_every and
                                                                                    i % t.eval_every == 0))
            if not due and not (stop.received and world == 1):
                continue  # the loss stays on the device until a log step: no host sync per step
            over, signum = _agree_stop(t.time_budget_s, time.perf_counter() - begin, stop.received, device)
            stopping = over or bool(signum)
            losses = torch.stack(window).float().cpu()
            if not torch.isfinite(losses).all():
                kept = ckpt.latest()
                raise FloatingPointError(f"train clip: the loss is {losses.tolist()} at steps {i - len(window) + 1}-"
                                         f"{i}; the last good checkpoint {kept} is kept (resume from it with a lower "
                                         f"train.lr or train.grad_clip=1)")
            now = time.perf_counter()
            record = {"stage": STAGE, "step": i, "loss": round(float(losses.mean()), 6),
                      "lr": cosine_lr(i - 1, schedule),
                      "samples_per_s": round(len(window) * t.batch_size * world / (now - window_start), 1)}
            first_loss = record["loss"] if first_loss is None else first_loss
            window = []
            if val is not None and ((t.eval_every and i % t.eval_every == 0) or i == t.steps or over):
                record.update({f"val/{k}": v for k, v in val.evaluate(step.wrapped, recipe.fast, device).items()})
            if rank == 0:
                ckpt.log(run / "metrics.jsonl", record)
            last = record
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            bar.update(i - bar.n)
            elapsed = elapsed_before + time.perf_counter() - begin
            if i % t.ckpt_every == 0 or i == t.steps or stopping:
                ckpt.save(i, model, step.optimizer, feed, elapsed, device)
            window_start = time.perf_counter()  # evaluation and checkpoints are not counted as training time
            if signum:
                bar.close()
                name = stop.name or f"signal {signum}"
                raise TrainingInterrupted(f"train clip: stopped by {name} at step {i}; checkpoint "
                                          f"{ckpt.directory / f'step-{i:07d}'} saved; run the same command again "
                                          f"to resume", signum)
            if stopping and i < t.steps:
                summary["status"] = "stopped"
                summary["reason"] = f"train.time_budget_s={t.time_budget_s:g} reached at step {i} of {t.steps}; " \
                                    f"the same command resumes"
                break
            if stop_after is not None and i - start >= stop_after and i < t.steps:
                summary["status"] = "interrupted"
                break
        bar.close()
        summary.update(step=i, loss=last.get("loss"), first_loss=first_loss,
                       val={k[4:]: v for k, v in last.items() if k.startswith("val/")} or None,
                       elapsed_s=round(elapsed_before + time.perf_counter() - begin, 1),
                       skipped=dict(feed.skipped))
        if summary["status"] != "interrupted":
            summary["model"] = str(write_model(run / "model", model, tokenizer, recipe, i, rank))
            summary["loss_curve"] = str(ckpt.plot(run / "metrics.jsonl", run / "loss_curve.png"))
            if rank == 0:
                ckpt.write_summary(run / "summary.json", summary)
        return summary
    finally:
        torch.set_num_threads(threads)
        if feed is not None:
            feed.close()
