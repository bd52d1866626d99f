"""Stateless, seeded mini-batches of feature rows: the batch for step s depends only on (seed, s), so a
resumed run sees exactly the batches it would have seen."""

from __future__ import annotations

from typing import Iterator

import torch

from .features import FeatureSet


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
        self.per_epoch = max(1, len(self.rows) // self.batch_size)
        self.groups = features.groups()

    def batch(self, step: int) -> dict:
        epoch, index = divmod(step, self.per_epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.rows), generator=generator)
        rows = self.rows[order[index * self.batch_size:(index + 1) * self.batch_size]]
        out = {m: self.features.features[m][rows].to(self.device) for m in self.modalities}
        out["present"] = {m: self.features.present[m][rows].to(self.device) for m in self.modalities}
        out["groups"] = self.groups[rows].to(self.device)
        return out

    def __call__(self, start_step: int) -> Iterator[dict]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1
