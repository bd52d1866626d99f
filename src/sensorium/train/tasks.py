"""Alternating gradient descent over several tasks or datasets (IMP, Akbari et al. 2023): each optimisation step
takes one batch from one task, chosen by a seeded schedule, so heterogeneous modalities, losses and input sizes
never have to share a batch. `Alternating` turns the tasks into the `batches`/`step_fn` pair `Trainer.fit`
expects, and each task's batch iterator resumes at the right position after a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

SCHEDULES = ("round_robin", "weighted")


@dataclass
class Task:
    """One task: its batches (`batches(i)` yields its batches from its i-th on), its step function and weight."""

    batches: Callable[[int], Iterator[Any]]
    step_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict]]
    weight: float = 1.0


class Alternating:
    """Interleave tasks: "round_robin" cycles through them in order; "weighted" draws one per step with
    probability proportional to its weight, from a generator seeded by (seed, step) so the draw is a pure function
    of the step (deterministic and resumable)."""

    def __init__(self, tasks: dict[str, Task], schedule: str = "round_robin", seed: int = 0):
        if not tasks:
            raise ValueError("alternating training needs at least one task")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.tasks, self.names, self.schedule, self.seed = tasks, list(tasks), schedule, seed
        weights = np.array([tasks[n].weight for n in self.names], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"task weights must be non-negative and not all zero, got {weights.tolist()}")
        self.p = weights / weights.sum()

    def task_at(self, step: int) -> str:
        """Which task step `step` trains."""
        if self.schedule == "round_robin":
            return self.names[step % len(self.names)]
        return self.names[int(np.random.default_rng([self.seed, step]).choice(len(self.names), p=self.p))]

    def batches(self, start: int) -> Iterator[tuple[str, Any]]:
        """(task name, batch) pairs from step `start` on; each task's iterator starts after the batches it
        already gave in steps before `start`."""
        done = {n: 0 for n in self.names}
        for step in range(start):
            done[self.task_at(step)] += 1
        iterators = {n: self.tasks[n].batches(done[n]) for n in self.names}
        step = start
        while True:
            name = self.task_at(step)
            yield name, next(iterators[name])
            step += 1

    def step_fn(self, model: nn.Module, item: tuple[str, Any]) -> tuple[torch.Tensor, dict]:
        """Run the chosen task's step; its loss is also logged as `loss/<task>`."""
        name, batch = item
        loss, logs = self.tasks[name].step_fn(model, batch)
        return loss, {**logs, f"loss/{name}": loss.item()}
