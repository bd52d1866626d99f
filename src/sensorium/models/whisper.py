"""Whisper's audio encoder on Sensorium's nn/ blocks: two 1-D convolutions over log-mel frames (the
second halves the frame rate), fixed sinusoidal positions, a pre-norm transformer and a final LayerNorm."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.nn import Transformer, TransformerConfig


@dataclass
class WhisperEncoderConfig:
    """Shape of a Whisper encoder (tiny: 80 mels, 1500 positions, dim 384, 4 layers, 6 heads)."""

    n_mels: int = 80
    n_positions: int = 1500  # frames after the stride-2 conv; input has 2 * n_positions mel frames
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(
        dim=384, depth=4, n_heads=6, mlp_hidden=1536, activation="gelu"))


def sinusoids(length: int, dim: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's sinusoidal position table [length, dim] (sin half, then cos half)."""
    log_inc = torch.log(torch.tensor(max_timescale)) / (dim // 2 - 1)
    inv = torch.exp(-log_inc * torch.arange(dim // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


class WhisperEncoder(nn.Module):
    """Log-mel features [B, n_mels, 2 * n_positions] -> hidden states [B, n_positions, dim]."""

    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.transformer.dim
        self.conv1 = nn.Conv1d(cfg.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.pos_embed = nn.Parameter(sinusoids(cfg.n_positions, d), requires_grad=False)
        self.transformer = Transformer(cfg.transformer)
        self.final_norm = nn.LayerNorm(d, eps=cfg.transformer.norm_eps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """All hidden states; Whisper always sees a full chunk (30 s for the released models)."""
        if features.shape[-1] != 2 * self.cfg.n_positions or features.shape[1] != self.cfg.n_mels:
            raise ValueError(f"Whisper encoder expects log-mel [B, {self.cfg.n_mels}, {2 * self.cfg.n_positions}], "
                             f"got {list(features.shape)}: pad or cut the audio to the model's chunk length")
        x = F.gelu(self.conv2(F.gelu(self.conv1(features)))).transpose(1, 2)
        return self.final_norm(self.transformer(x + self.pos_embed.to(x.dtype)))

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        """One vector per clip [B, dim]: the mean over frames (for retrieval/alignment towers)."""
        return self.forward(features).mean(dim=1)
