"""The one loss registry. Every loss is an nn.Module called as

    loss(embeddings, logit_scale, logit_bias=None, mask=None, groups=None)

with `embeddings` a sequence (or dict by modality) of L2-normalised [B, D] tensors: two for the pairwise losses
(clip, siglip), two or more for symile. `uses_bias` says whether the loss reads `logit_bias` (a model that trains
with it creates the parameter); `pairwise` whether it scores one pair (MultiModalObjective loops over pairs)."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from sensorium.objectives.contrastive import ClipLoss, SigLipLoss
from sensorium.objectives.symile import SymileLoss

LOSSES: dict[str, type[nn.Module]] = {"clip": ClipLoss, "siglip": SigLipLoss, "symile": SymileLoss}
for _cls, _pairwise in ((ClipLoss, True), (SigLipLoss, True), (SymileLoss, False)):
    _cls.pairwise = _pairwise


def build_loss(name: str, **options: Any) -> nn.Module:
    """The registered loss `name`, given those of `options` its constructor takes (local_loss, negative_sampling,
    seed); an unknown name lists the registered ones."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered: {', '.join(LOSSES)}")
    cls = LOSSES[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})
