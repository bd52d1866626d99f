"""Stateless, seeded mini-batches of feature rows: the batch for step s depends only on (seed, s), so a
resumed run sees exactly the batches it would have seen."""

from __future__ import annotations

from typing import Iterator

import torch

from sensorium.data.features import FeatureSet


def seeded_rows(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Row indices of mini-batch `step` over n rows: epoch-wise permutations seeded by (seed, epoch), so the batch
    of any step is known without replaying the ones before it."""
    per_epoch = max(1, n // batch_size)
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[index * batch_size:(index + 1) * batch_size]


class FeatureBatches:
    """Batches (dict by modality + `present` masks + `groups`) drawn epoch-wise without replacement."""

    def __init__(self, features: FeatureSet, modalities: list[str], batch_size: int, seed: int = 0,
                 device: str | torch.device = "cpu"):
        usable = torch.zeros(len(features), dtype=torch.bool)
        for m in modalities:
            usable |= features.present[m]
        self.rows = usable.nonzero().squeeze(1)
        if len(self.rows) == 0:
            raise ValueError(f"no training sample has any of {modalities}")
        self.features, self.modalities, self.seed, self.device = features, modalities, seed, device
        self.batch_size = min(batch_size, len(self.rows))
        self.groups = features.groups()

    def batch(self, step: int) -> dict:
        rows = self.rows[seeded_rows(len(self.rows), self.batch_size, self.seed, step)]
        out = {m: self.features.features[m][rows].to(self.device) for m in self.modalities}
        out["present"] = {m: self.features.present[m][rows].to(self.device) for m in self.modalities}
        out["groups"] = self.groups[rows].to(self.device)
        return out

    def __call__(self, start_step: int) -> Iterator[dict]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1
