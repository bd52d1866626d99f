"""Losses as nn.Modules that work on one process and across processes, behind one registry and one signature
(objectives/registry.py)."""

from sensorium.objectives.contrastive import ClipLoss, Shard, SigLipLoss, gather_no_grad, gather_with_grad
from sensorium.objectives.registry import LOSSES, build_loss
from sensorium.objectives.symile import SymileLoss, mip, pairwise_scores, symile_scores

__all__ = ["ClipLoss", "LOSSES", "Shard", "SigLipLoss", "SymileLoss", "build_loss", "gather_no_grad",
           "gather_with_grad", "mip", "pairwise_scores", "symile_scores"]
