"""A small generic training loop: AdamW (fused on CUDA), warmup + cosine schedule, gradient clipping and
accumulation, bf16 autocast on CUDA, periodic validation, safetensors checkpoints with exact resume, a NaN guard
that keeps the last good checkpoint, metrics as JSONL, a progress bar and a loss-curve PNG. Models plug in
through a `step_fn(model, batch) -> (loss, logs)` and a batch iterator, so the loop knows nothing of modalities;
several tasks are trained by alternating gradient descent through `train.tasks.Alternating`."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from sensorium.core.config import checked
from sensorium.core.files import load_state, save_state
from sensorium.core.progress import progress_bar
from sensorium.eval.plots import loss_curve
from sensorium.train.checkpoint import latest_checkpoint

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """Optimisation settings of one training stage (ranges checked when a recipe is loaded)."""

    steps: int = checked(1000, min=1)
    lr: float = checked(1e-3, gt=0)
    weight_decay: float = checked(0.1, min=0)
    warmup: int = checked(50, min=0)
    batch_size: int = checked(256, min=1)
    grad_clip: float = checked(1.0, min=0)  # 0 = no clipping
    accumulate: int = checked(1, min=1)  # micro-batches per optimiser step
    precision: str = checked("auto", choices=PRECISIONS)  # auto (bf16 autocast on CUDA, fp32 elsewhere) | fp32 | bf16
    eval_every: int = checked(250, min=1)
    ckpt_every: int = checked(500, min=1)
    keep_checkpoints: int = checked(2, min=1)
    log_every: int = checked(10, min=1)
    seed: int = 0


def cosine_lr(step: int, config: TrainConfig) -> float:
    """Linear warmup then cosine decay to 5% of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(params: list[nn.Parameter], config: TrainConfig, capturable: bool = False
                   ) -> torch.optim.Optimizer:
    """AdamW with decay only on matrices (not norms, biases, temperatures); fused kernels on CUDA.
    `capturable`: the step count lives on the device, so the optimizer step can be captured in a CUDA graph."""
    decay = [p for p in params if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in params if p.requires_grad and p.dim() < 2]
    fused = bool(params) and params[0].is_cuda
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98),
                             eps=1e-6, fused=fused, capturable=capturable)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA for "auto"/"bf16"; no autocast on CPU (bf16 there is slow and changes losses)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    """Runs `config.steps` optimisation steps of `step_fn` over `batches`, checkpointing into `run_dir`."""

    def __init__(self, model: nn.Module, config: TrainConfig, run_dir: str | Path, name: str = "train",
                 params: list[nn.Parameter] | None = None, progress: bool = True):
        self.model, self.config, self.name, self.progress = model, config, name, progress
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints" / name
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        self.optimizer = make_optimizer(self.params, config)
        self.step = 0
        self.elapsed = 0.0  # seconds spent in fit() over every run of this stage (resumes included)
        self.history: list[dict[str, Any]] = []

    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "rng": torch.get_rng_state(), "history": json.dumps(self.history), "elapsed": self.elapsed}

    def save(self) -> Path:
        """Checkpoint the current step, keeping the newest `keep_checkpoints`."""
        path = save_state(self.ckpt_dir / f"step-{self.step:07d}", self._state())
        for stale in sorted(self.ckpt_dir.glob("step-*"))[: -self.config.keep_checkpoints]:
            shutil.rmtree(stale, ignore_errors=True)
        return path

    def resume(self) -> bool:
        """Load the latest checkpoint of this stage, if one exists; returns whether it did. Metrics written after
        that checkpoint (by the interrupted run) are dropped from metrics.jsonl, so it reads as one run."""
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return False
        state = load_state(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"])
        self.history = json.loads(state["history"])
        self.elapsed = float(state.get("elapsed", 0.0))
        if self.metrics_path.exists():
            kept = [line for line in self.metrics_path.read_text().splitlines() if line.strip() and
                    (json.loads(line).get("stage") != self.name or json.loads(line).get("step", 0) <= self.step)]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        log.info("resumed %s from %s (step %d)", self.name, path, self.step)
        return True

    def _diverged(self, what: str, value: float) -> FloatingPointError:
        """The NaN/inf error: names the step and the last good checkpoint, which is kept (never overwritten)."""
        kept = latest_checkpoint(self.ckpt_dir)
        if kept is None:  # nothing saved yet: the weights before this step are still good, keep them
            kept = self.save()
        return FloatingPointError(f"{self.name}: {what} is {value} at step {self.step + 1}; the last good checkpoint "
                                  f"{kept} is kept (resume from it, e.g. with a lower train.lr or a smaller "
                                  f"train.grad_clip)")

    def _micro_steps(self, it: Iterator[Any], step_fn: Callable, precision: contextlib.AbstractContextManager
                     ) -> tuple[float, dict[str, float]]:
        """Forward and backward over `accumulate` micro-batches; returns the mean loss and logs."""
        total, logs_sum = 0.0, {}
        n = self.config.accumulate
        for _ in range(n):
            batch = next(it)
            with precision:
                loss, logs = step_fn(self.model, batch)
            if not torch.isfinite(loss):
                raise self._diverged("the loss", loss.item())
            (loss / n).backward()
            total += loss.item() / n
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + float(v) / n
        return total, logs_sum

    def fit(self, batches: Callable[[int], Iterator[Any]], step_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict]],
            evaluate: Callable[[nn.Module], dict[str, float]] | None = None) -> list[dict[str, Any]]:
        """Train until `config.steps`. `batches(i)` yields micro-batches starting at micro-batch i (= step with
        accumulate 1, step * accumulate otherwise), so a resumed run sees exactly the batches it would have seen."""
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        device = self.params[0].device if self.params else torch.device("cpu")
        precision = autocast(config.precision, device)
        bar = progress_bar(total=config.steps, initial=self.step, desc=self.name, unit="step", disable=not self.progress)
        it = batches(self.step * config.accumulate)
        start, before = time.time(), self.elapsed
        while self.step < config.steps:
            self.model.train()
            lr = cosine_lr(self.step, config)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss, logs = self._micro_steps(it, step_fn, precision)
            norm = torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip or float("inf"))
            if not torch.isfinite(norm):
                raise self._diverged("the gradient norm", norm.item())
            self.optimizer.step()
            self.step += 1
            record = {"stage": self.name, "step": self.step, "loss": round(loss, 5), "lr": lr,
                      "grad_norm": round(norm.item(), 4), **{k: round(v, 5) for k, v in logs.items()}}
            if evaluate is not None and (self.step % config.eval_every == 0 or self.step == config.steps):
                self.model.eval()
                with torch.no_grad():
                    record.update({f"val/{k}": v for k, v in evaluate(self.model).items()})
            if self.step % config.log_every == 0 or "val/" in " ".join(record) or self.step == config.steps:
                self.history.append(record)
                with self.metrics_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(1)
            self.elapsed = before + time.time() - start
            if self.step % config.ckpt_every == 0 or self.step == config.steps:
                self.save()
        bar.close()
        self.plot()
        log.info("%s: %d steps in %.1fs", self.name, config.steps, time.time() - start)
        return self.history

    def plot(self) -> Path | None:
        """Draw metrics.jsonl as run_dir/loss_curve.png (every stage of the run, validation where logged)."""
        if not self.metrics_path.exists():
            return None

        try:
            return loss_curve(self.metrics_path, self.run_dir / "loss_curve.png")
        except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose a finished run
            log.warning("loss curve not drawn: %s", exc)
            return None
