"""Losses as nn.Modules that work on one process and across processes."""

from .contrastive import ClipLoss, SigLipLoss, gather_with_grad

LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss}

__all__ = ["ClipLoss", "LOSSES", "SigLipLoss", "gather_with_grad"]
