"""Symile's binary XOR experiment (Saporta et al., NeurIPS 2024, rajesh-lab/symile): a, b ~ Bernoulli(0.5)^d and,
with probability p_hat per sample, c = a XOR b (otherwise c = a). b is independent of a and of c taken one at a
time, so pairwise CLIP cannot predict b from (a, c) above chance, while Symile, whose multilinear inner product
sees the triple, approaches the Bayes-optimal p_hat + (1 - p_hat) / 2^d. Linear encoders per variable, as in the
paper; the zero-shot task picks b among all 2^d binary vectors."""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.core.config import checked
from sensorium.core.lock import run_lock
from sensorium.core.progress import progress_bar
from sensorium.data.batches import seeded_rows
from sensorium.objectives import LOSSES
from sensorium.objectives.multimodal import MultiModalObjective
from sensorium.objectives.symile import NEGATIVE_SAMPLING, pairwise_scores, symile_scores
from sensorium.train.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)
NAMES = ("a", "b", "c")


@dataclass
class XorConfig:
    """The sweep: data size, encoder width, optimisation (the paper's settings by default), p_hat grid, losses."""

    d_v: int = checked(5, min=1)
    d_r: int = checked(16, min=1)
    n_train: int = checked(10_000, min=1)
    n_test: int = checked(5_000, min=1)
    p_hats: list[float] = checked(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)], min=0, max=1)
    losses: list[str] = checked(default_factory=lambda: ["clip", "symile"], choices=lambda: list(LOSSES))
    negative_sampling: str = checked("n", choices=NEGATIVE_SAMPLING)
    logit_scale_init: float = -0.3
    seeds: list[int] = field(default_factory=lambda: [0])
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=300, lr=0.1, weight_decay=0.01, warmup=10, batch_size=1000, grad_clip=0.0, eval_every=10**9,
        ckpt_every=10**9, keep_checkpoints=1, log_every=50))


def binary_xor(n: int, d: int, p_hat: float, seed: int) -> dict[str, torch.Tensor]:
    """n samples of (a, b, c) as float [n, d] tensors: c = a XOR b for a Bernoulli(p_hat) share of samples, else a."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 2, (n, d), generator=g)
    b = torch.randint(0, 2, (n, d), generator=g)
    xor = (torch.rand(n, 1, generator=g) < p_hat)
    c = torch.where(xor, a ^ b, a)
    return {"a": a.float(), "b": b.float(), "c": c.float()}


def bayes_accuracy(p_hat: float, d: int) -> float:
    """Best possible accuracy of predicting b from (a, c): exact when c != a, else guess b = 0."""
    return p_hat + (1 - p_hat) / 2 ** d


class XorEncoders(nn.Module):
    """One linear encoder per variable and a learned temperature (log scale)."""

    def __init__(self, d_v: int, d_r: int, logit_scale_init: float):
        super().__init__()
        self.encoders = nn.ModuleDict({n: nn.Linear(d_v, d_r) for n in NAMES})
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalised representations of every variable in the batch."""
        return {n: F.normalize(self.encoders[n](batch[n]), dim=-1) for n in NAMES if n in batch}


def _batches(data: dict[str, torch.Tensor], batch_size: int, seed: int):
    """Epoch-wise shuffled batches; batch i is a pure function of (seed, i) (exact resume)."""
    def batches(start: int):
        step = start
        while True:
            rows = seeded_rows(data["a"].shape[0], batch_size, seed, step)
            yield {k: v[rows] for k, v in data.items()}
            step += 1
    return batches


@torch.no_grad()
def zero_shot_accuracy(model: XorEncoders, data: dict[str, torch.Tensor], loss: str) -> float:
    """Accuracy of choosing b among all 2^d binary vectors from (a, c): MIP for Symile, the sum of pairwise dot
    products for CLIP (the scoring each objective trains)."""
    d = data["b"].shape[1]
    support = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))
    cand = F.normalize(model.encoders["b"](support), dim=-1)
    rep = model({"a": data["a"], "c": data["c"]})
    scores = (symile_scores if loss == "symile" else pairwise_scores)(cand, [rep["a"], rep["c"]])
    truth = (data["b"] * (2 ** torch.arange(d - 1, -1, -1).float())).sum(1).long()
    return (scores.argmax(1) == truth).float().mean().item()


def train_one(config: XorConfig, p_hat: float, loss: str, seed: int, run_dir: str | Path,
              progress: bool = False) -> dict[str, Any]:
    """Train encoders with one objective at one p_hat and seed; returns test accuracy and the final loss."""
    torch.manual_seed(seed)
    train = binary_xor(config.n_train, config.d_v, p_hat, seed=2 * seed)
    test = binary_xor(config.n_test, config.d_v, p_hat, seed=2 * seed + 1)
    model = XorEncoders(config.d_v, config.d_r, config.logit_scale_init)
    objective = MultiModalObjective(loss, negative_sampling=config.negative_sampling, seed=seed)

    def step_fn(model: XorEncoders, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return objective(model(batch), model.logit_scale)

    name = f"{loss}-p{p_hat:.2f}-s{seed}"
    trainer = Trainer(model, config.train, Path(run_dir) / name, name=name, progress=progress)
    history = trainer.fit(_batches(train, config.train.batch_size, seed), step_fn)
    model.eval()
    return {"loss_fn": loss, "p_hat": p_hat, "seed": seed, "accuracy": round(zero_shot_accuracy(model, test, loss), 4),
            "final_loss": history[-1]["loss"], "logit_scale": round(model.logit_scale.exp().item(), 3)}


def run_xor(config: XorConfig, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """The whole sweep: accuracy of retrieving b from (a, c) against p_hat, per objective (mean over seeds),
    holding the run directory's lock (a second writer is refused)."""
    with run_lock(run_dir):
        return _run_xor(config, run_dir, progress)


def _run_xor(config: XorConfig, run_dir: str | Path, progress: bool) -> dict[str, Any]:
    runs = []
    grid = [(p, loss, s) for p in config.p_hats for loss in config.losses for s in config.seeds]
    for p_hat, loss, seed in progress_bar(grid, desc="symile-xor", unit="run", disable=not progress):
        runs.append(train_one(config, p_hat, loss, seed, run_dir))
        log.info("%s", runs[-1])
    table = []
    for p_hat in config.p_hats:
        row: dict[str, Any] = {"p_hat": p_hat, "bayes_optimal": round(bayes_accuracy(p_hat, config.d_v), 4),
                               "chance": round(2.0 ** -config.d_v, 4)}
        for loss in config.losses:
            accs = [r["accuracy"] for r in runs if r["p_hat"] == p_hat and r["loss_fn"] == loss]
            row[loss] = round(sum(accs) / len(accs), 4)
            if len(accs) > 1:
                row[f"{loss}_std"] = round(math.sqrt(sum((a - row[loss]) ** 2 for a in accs) / (len(accs) - 1)), 4)
        table.append(row)
    return {"table": table, "runs": runs}


def plot_xor(table: list[dict[str, Any]], losses: list[str], out: str | Path) -> Path:
    """Accuracy against p_hat for each objective, with chance and the Bayes-optimal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = [r["p_hat"] for r in table]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for loss in losses:
        ax.plot(p, [r[loss] for r in table], "o-", label=loss)
    ax.plot(p, [r["bayes_optimal"] for r in table], "k--", lw=1, label="Bayes optimal")
    ax.plot(p, [r["chance"] for r in table], "k:", lw=1, label="chance")
    ax.set_xlabel("p_hat (share of samples with c = a XOR b)")
    ax.set_ylabel("accuracy: b from (a, c)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
