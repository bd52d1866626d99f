"""A small generic training loop: AdamW (fused on CUDA), warmup + cosine schedule, periodic validation,
safetensors checkpoints with exact resume, NaN guard, metrics as JSONL. Models plug in through a
`step_fn(model, batch) -> (loss, logs)` and a batch iterator, so the loop knows nothing of modalities."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .checkpoint import latest_checkpoint, load_state, save_state

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings of one training stage."""

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 50
    batch_size: int = 256
    grad_clip: float = 1.0
    eval_every: int = 250
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0


def cosine_lr(step: int, config: TrainConfig) -> float:
    """Linear warmup then cosine decay to 5% of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with decay only on matrices (not norms, biases, temperatures); fused kernels on CUDA."""
    decay = [p for p in params if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in params if p.requires_grad and p.dim() < 2]
    fused = bool(params) and params[0].is_cuda
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98),
                             eps=1e-6, fused=fused)


class Trainer:
    """Runs `config.steps` optimisation steps of `step_fn` over `batches`, checkpointing into `run_dir`."""

    def __init__(self, model: nn.Module, config: TrainConfig, run_dir: str | Path, name: str = "train",
                 params: list[nn.Parameter] | None = None, progress: bool = True):
        self.model, self.config, self.name, self.progress = model, config, name, progress
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints" / name
        self.params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        self.optimizer = make_optimizer(self.params, config)
        self.step = 0
        self.history: list[dict[str, Any]] = []

    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "rng": torch.get_rng_state(), "history": json.dumps(self.history)}

    def save(self) -> Path:
        path = save_state(self.ckpt_dir / f"step-{self.step:07d}", self._state())
        old = sorted(self.ckpt_dir.glob("step-*"))[: -self.config.keep_checkpoints]
        for stale in old:
            import shutil

            shutil.rmtree(stale, ignore_errors=True)
        return path

    def resume(self) -> bool:
        """Load the latest checkpoint of this stage, if one exists; returns whether it did."""
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return False
        state = load_state(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"])
        self.history = json.loads(state["history"])
        log.info("resumed %s from %s (step %d)", self.name, path, self.step)
        return True

    def fit(self, batches: Callable[[int], Iterator[Any]], step_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict]],
            evaluate: Callable[[nn.Module], dict[str, float]] | None = None) -> list[dict[str, Any]]:
        """Train until `config.steps`. `batches(step)` yields batches starting at `step` (deterministic resume)."""
        from tqdm import tqdm

        config = self.config
        metrics_path = self.run_dir / "metrics.jsonl"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=config.steps, initial=self.step, desc=self.name, unit="step", disable=not self.progress)
        it = batches(self.step)
        start = time.time()
        while self.step < config.steps:
            batch = next(it)
            self.model.train()
            lr = cosine_lr(self.step, config)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss, logs = step_fn(self.model, batch)
            if not torch.isfinite(loss):
                self.save()
                raise FloatingPointError(f"{self.name}: loss is {loss.item()} at step {self.step}; "
                                         f"state saved to {self.ckpt_dir} (try a lower lr)")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)
            self.optimizer.step()
            self.step += 1
            record = {"stage": self.name, "step": self.step, "loss": round(loss.item(), 5), "lr": lr,
                      **{k: round(float(v), 5) for k, v in logs.items()}}
            if evaluate is not None and (self.step % config.eval_every == 0 or self.step == config.steps):
                self.model.eval()
                with torch.no_grad():
                    record.update({f"val/{k}": v for k, v in evaluate(self.model).items()})
            if self.step % 10 == 0 or "val/" in " ".join(record) or self.step == config.steps:
                self.history.append(record)
                with metrics_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
            if self.step % config.ckpt_every == 0 or self.step == config.steps:
                self.save()
        bar.close()
        log.info("%s: %d steps in %.1fs", self.name, config.steps, time.time() - start)
        return self.history
