"""Shared by the fast-step tests: losses of the tiny dual encoder trained on one synthetic batch."""

from __future__ import annotations

import torch

from sensorium.models.dual_encoder import DualEncoder
from sensorium.train.fast import ContrastiveStep, FastConfig, clip_config, synthetic_batch


def tiny_losses(cfg: FastConfig, steps: int = 2) -> list[float]:
    """Losses of `steps` ContrastiveSteps under `cfg` on the tiny DualEncoder (seed 0) and one batch of 8, on CPU."""
    torch.manual_seed(0)
    model = DualEncoder(clip_config("tiny"))
    step = ContrastiveStep(model, cfg)
    pixels, ids = synthetic_batch(model.cfg, 8, "cpu")
    return [step(pixels, ids).item() for _ in range(steps)]
