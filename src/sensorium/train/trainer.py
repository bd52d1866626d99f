"""A small generic training loop: AdamW (fused on CUDA), warmup + cosine schedule, gradient clipping and
accumulation, bf16 autocast on CUDA, periodic validation, safetensors checkpoints with exact resume, a NaN guard
that keeps the last good checkpoint, metrics as JSONL, a progress bar and a loss-curve PNG. Models plug in
through a `step_fn(model, batch) -> (loss, logs)` and a batch iterator, so the loop knows nothing of modalities;
several tasks are trained by alternating gradient descent through `train.tasks.Alternating`. Reliability: one
writer per run directory (core.lock), resume from the newest checkpoint that verifies (damaged ones set aside and
named), SIGINT/SIGTERM save at the next step boundary, and divergence rolls back to the last finite checkpoint."""

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
from sensorium.core.files import CheckpointError, load_state, save_state
from sensorium.core.lock import run_lock
from sensorium.core.progress import progress_bar
from sensorium.eval.plots import loss_curve
from sensorium.train.checkpoint import checkpoints, latest_checkpoint, newest_valid, set_aside
from sensorium.train.interrupt import StopSignals, TrainingInterrupted

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
        self.last_loss = float("nan")

    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "rng": torch.get_rng_state(), "history": json.dumps(self.history), "elapsed": self.elapsed,
                "loss": self.last_loss}

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters() if p.is_floating_point())

    def save(self) -> Path:
        """Checkpoint the current step, keeping the newest `keep_checkpoints`. Only finite weights are saved (a
        non-finite one is a divergence: rolled back and reported), so every checkpoint is a good one."""
        if not self._weights_finite():
            raise self._diverged("a weight", "not finite", after=True)
        with run_lock(self.run_dir):
            path = save_state(self.ckpt_dir / f"step-{self.step:07d}", self._state())
            for stale in checkpoints(self.ckpt_dir)[: -self.config.keep_checkpoints]:
                shutil.rmtree(stale, ignore_errors=True)
        return path

    def _load(self, path: Path) -> None:
        """Restore a checkpoint that `newest_valid` has just verified (so it is not hashed twice)."""
        state = load_state(path, verify=False)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: does not fit this model and optimizer ({str(exc).splitlines()[0]}); "
                                  f"the recipe changed since it was saved: use a new run directory") from None
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"])
        self.history = json.loads(state["history"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.last_loss = float(state.get("loss", float("nan")))

    def resume(self) -> bool:
        """Load the newest checkpoint of this stage whose files verify, if one exists; returns whether it did.
        Newer damaged checkpoints are set aside (renamed `.damaged`) and named in a warning. Metrics written after
        the checkpoint (by the interrupted run) are dropped from metrics.jsonl, so it reads as one run."""
        with run_lock(self.run_dir):
            path, skipped = newest_valid(self.ckpt_dir)
            for bad, reason in skipped:
                set_aside(bad, reason)
            if skipped:
                log.warning("%s: skipped %d damaged checkpoint(s) (%s); resuming from %s", self.name, len(skipped),
                            "; ".join(reason for _, reason in skipped), path or "the start")
            if path is None:
                return False
            self._load(path)
            self._trim_metrics()
        log.info("resumed %s from %s (step %d)", self.name, path, self.step)
        return True

    def _trim_metrics(self) -> None:
        """Drop this stage's metrics after the resumed step, and any line cut short by a crash."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("stage") != self.name or record.get("step", 0) <= self.step:
                kept.append(line)
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _diverged(self, what: str, value: float | str, after: bool = False) -> FloatingPointError:
        """The NaN/inf error: rolls the model, optimizer and step back to the newest checkpoint (all of them hold
        finite weights) and names it. With nothing saved yet, the current weights are saved if they are finite."""
        kept = latest_checkpoint(self.ckpt_dir)
        when = f"after step {self.step}" if after else f"at step {self.step + 1}"
        if kept is None and self._weights_finite():
            kept = self.save()
        if kept is None:
            return FloatingPointError(f"{self.name}: {what} is {value} {when} and no checkpoint with finite weights "
                                      f"exists; start again with a lower train.lr or a smaller train.grad_clip")
        self._load(kept)
        return FloatingPointError(f"{self.name}: {what} is {value} {when}; rolled back to the last good checkpoint "
                                  f"{kept} (step {self.step}), which is kept (resume from it, e.g. with a lower "
                                  f"train.lr or a smaller train.grad_clip)")

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
        with run_lock(self.run_dir), StopSignals() as stop:
            return self._fit(batches, step_fn, evaluate, stop)

    def _fit(self, batches: Callable[[int], Iterator[Any]], step_fn: Callable, evaluate: Callable | None,
             stop: StopSignals) -> list[dict[str, Any]]:
        config = self.config
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
            self.last_loss = loss
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
            if self.step % config.ckpt_every == 0 or self.step == config.steps or stop.received:
                path = self.save()
                if stop.received:
                    bar.close()
                    raise TrainingInterrupted(f"{self.name}: stopped by {stop.name} at step {self.step}; checkpoint "
                                              f"{path} saved; run the same command again to resume", stop.received)
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
