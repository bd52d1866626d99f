"""One objective over a dict of modality embeddings: CLIP or SigLIP over every pair of modalities (pairwise, as
ImageBind-style or the Symile paper's CLIP baseline train), or Symile over all of them at once. Present masks
decide which samples count: `missing="drop"` leaves out a pair (or, for Symile, a sample) with an absent
modality; `missing="embed"` keeps every sample because the model encoded absences (Symile's way)."""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import torch
from torch import nn

from sensorium.objectives.registry import build_loss

MISSING = ("drop", "embed")


class MultiModalObjective(nn.Module):
    """A registered loss (`kind`) over `pairs` of modalities (default: every pair) for the pairwise losses, or
    over all modalities at once (symile)."""

    def __init__(self, kind: str = "clip", negative_sampling: str = "n", local_loss: bool = False,
                 missing: str = "drop", seed: int = 0, pairs: Sequence[Sequence[str]] | None = None):
        super().__init__()
        if missing not in MISSING:
            raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
        self.kind, self.missing = kind, missing
        self.pairs = [tuple(p) for p in pairs] if pairs else None
        self.loss = build_loss(kind, negative_sampling=negative_sampling, local_loss=local_loss, seed=seed)

    def _mask(self, present: dict[str, torch.Tensor] | None, names: Sequence[str]) -> torch.Tensor | None:
        if present is None or self.missing == "embed":
            return None
        mask = None
        for name in names:
            if name in present:
                mask = present[name].bool() if mask is None else mask & present[name].bool()
        return mask

    def forward(self, emb: dict[str, torch.Tensor], logit_scale: torch.Tensor, logit_bias: torch.Tensor | None = None,
                present: dict[str, torch.Tensor] | None = None,
                groups: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss and per-pair (or all-modality) losses for logging."""
        names = list(emb)
        if not self.loss.pairwise:
            loss = self.loss([emb[m] for m in names], logit_scale, logit_bias, mask=self._mask(present, names),
                             groups=groups)
            return loss, {f"loss/{self.kind}": loss.item()}
        pairs = self.pairs or list(combinations(names, 2))
        if not pairs:
            raise ValueError(f"a pairwise objective needs two modalities, got {names}")
        losses = {f"{a}-{b}": self.loss([emb[a], emb[b]], logit_scale, logit_bias, mask=self._mask(present, (a, b)),
                                        groups=groups) for a, b in pairs}
        total = sum(losses.values()) / len(losses)
        return total, {f"loss/{k}": v.item() for k, v in losses.items()}
