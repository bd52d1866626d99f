"""Losses as nn.Modules that work on one process and across processes."""

from .contrastive import ClipLoss, Shard, SigLipLoss, gather_no_grad, gather_with_grad
from .symile import SymileLoss, mip, pairwise_scores, symile_scores

# Pairwise losses by name (called as loss(a, b, logit_scale[, logit_bias], mask=, groups=)).
LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss}

__all__ = ["ClipLoss", "LOSSES", "Shard", "SigLipLoss", "SymileLoss", "gather_no_grad", "gather_with_grad", "mip",
           "pairwise_scores", "symile_scores"]
