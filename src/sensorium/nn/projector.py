"""Modality projectors: a tower's token sequence [M, T, D_in] (+ mask) -> tokens in a language model's embedding
space [M, T', D_out]. Three kinds: an MLP per token (LLaVA-1.5), pixel shuffle + linear, which folds each
r x r block of a square grid into one token (nanoVLM), and learned queries that cross-attend to the tokens
(a Q-Former-lite, as in BLIP-2 / Video-LLaMA), which gives a fixed token count for any input length. Any kind
can tag its input tokens with their grid coordinates and learned positions, and be followed by bidirectional
encoder blocks with a 2D sine-cosine position code (`TokenEncoder`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sensorium.nn.attention import Attention, attention_mask
from sensorium.nn.transformer import MLP, Transformer, TransformerConfig


@dataclass
class ProjectorConfig:
    """Which projector and its shape; fields that a kind does not use are ignored."""

    kind: str = "mlp"  # mlp | pixel_shuffle | qformer
    hidden: int = 0  # MLP / Q-Former width (0 = the output dim)
    factor: int = 2  # pixel_shuffle: r (an r x r block of tokens becomes one token)
    queries: int = 16  # qformer: learned queries = output tokens per item
    layers: int = 2  # qformer: cross-attention blocks
    heads: int = 4  # qformer: attention heads
    positions: int = 0  # learned position embedding added to the first `positions` input tokens (0 = none)
    coords: bool = False  # append each token's (x, y) in [-1, 1] on its square grid as 2 input features (CoordConv)
    position_std: float = 0.02  # its init scale; near the input's own scale makes positions salient from step 0
    dropout: float = 0.0
    encoder_layers: int = 0  # > 0: bidirectional transformer blocks over the projected tokens (any kind)
    encoder_heads: int = 4
    encoder_positions: str = "sincos2d"  # sincos2d (fixed 2D sine-cosine code on square grids, as MAE) | none


class _Positions(nn.Module):
    """Learned embeddings added to input tokens by index (tokens beyond the table are an error, not a wrap)."""

    def __init__(self, n: int, dim: int, std: float = 0.02):
        super().__init__()
        self.table = nn.Parameter(torch.randn(n, dim) * std) if n else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return tokens
        if tokens.shape[1] > self.table.shape[0]:
            raise ValueError(f"projector has {self.table.shape[0]} learned positions but got {tokens.shape[1]} "
                             "tokens per item; raise projector.positions")
        return tokens + self.table[: tokens.shape[1]].to(tokens.dtype)


def grid_coords(tokens: torch.Tensor) -> torch.Tensor:
    """[M, g*g, D] tokens of a row-major square grid -> [M, g*g, D + 2] with each token's (x, y) in [-1, 1]
    appended: the coordinate tags that Relation Networks add to CNN cells, so distances are linear in the input."""
    m, t, _ = tokens.shape
    side = int(round(t ** 0.5))
    if side * side != t:
        raise ValueError(f"projector coords need a square token grid; the tower gave {t} tokens per item")
    axis = torch.linspace(-1.0, 1.0, side, device=tokens.device, dtype=tokens.dtype) if side > 1 else \
        torch.zeros(1, device=tokens.device, dtype=tokens.dtype)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    xy = torch.stack([x.flatten(), y.flatten()], dim=-1)
    return torch.cat([tokens, xy.expand(m, -1, -1)], dim=-1)


class _Input(nn.Module):
    """What every projector does to its input first: optional grid coordinates, then learned positions."""

    def __init__(self, cfg: ProjectorConfig, in_dim: int):
        super().__init__()
        self.coords = cfg.coords
        self.dim = in_dim + 2 * cfg.coords
        self.pos = _Positions(cfg.positions, self.dim, cfg.position_std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pos(grid_coords(tokens) if self.coords else tokens)


class MLPProjector(nn.Module):
    """Per-token Linear -> GELU -> Linear (LLaVA-1.5's mlp2x_gelu); keeps the token count and mask."""

    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.pos = _Input(cfg, in_dim)
        hidden = cfg.hidden or out_dim
        self.mlp = nn.Sequential(nn.Linear(self.pos.dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[M, T, D_in], [M, T] -> [M, T, D_out], [M, T]."""
        return self.mlp(self.drop(self.pos(tokens))), mask


class PixelShuffleProjector(nn.Module):
    """Square grid of g x g tokens -> (g/r)^2 tokens of r^2 D_in channels -> Linear (nanoVLM's modality projector)."""

    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.factor = cfg.factor
        self.pos = _Input(cfg, in_dim)
        self.proj = nn.Linear(self.pos.dim * cfg.factor ** 2, out_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[M, g*g, D_in] -> [M, (g/r)^2, D_out]; needs a full square grid whose side r divides."""
        m, t, _ = tokens.shape
        side, r = int(round(t ** 0.5)), self.factor
        if side * side != t or side % r or not bool(mask.all()):
            raise ValueError(f"pixel_shuffle needs a full square token grid with a side divisible by factor={r}; "
                             f"the tower gave {t} tokens per item{'' if bool(mask.all()) else ' with padding'}")
        x = self.pos(tokens)
        x = x.view(m, side // r, r, side // r, r, x.shape[-1]).permute(0, 1, 3, 2, 4, 5)
        x = self.proj(x.reshape(m, (side // r) ** 2, -1))
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


class _QueryBlock(nn.Module):
    """Queries: cross-attend to the tokens, self-attend, MLP (pre-norm, residual)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(width), nn.LayerNorm(width)
        self.cross = Attention(width, heads)
        self.norm_self, self.self_attn = nn.LayerNorm(width), Attention(width, heads)
        self.norm_mlp, self.mlp = nn.LayerNorm(width), MLP(width, 4 * width, "gelu")

    def forward(self, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q = q + self.cross(self.norm_q(q), mask=mask, context=self.norm_kv(kv))
        q = q + self.self_attn(self.norm_self(q))
        return q + self.mlp(self.norm_mlp(q))


class QFormerProjector(nn.Module):
    """`queries` learned vectors cross-attend to the tower tokens (padding masked) -> [M, queries, D_out]."""

    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int):
        super().__init__()
        width = cfg.hidden or out_dim
        if width % cfg.heads:
            raise ValueError(f"qformer width {width} is not divisible by heads={cfg.heads}")
        self.pos = _Input(cfg, in_dim)
        self.inp = nn.Linear(self.pos.dim, width)
        self.queries = nn.Parameter(torch.randn(cfg.queries, width) * 0.02)
        self.blocks = nn.ModuleList(_QueryBlock(width, cfg.heads) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[M, T, D_in], [M, T] -> [M, queries, D_out], all real."""
        kv = self.inp(self.pos(tokens))
        q = self.queries.to(kv.dtype).expand(tokens.shape[0], -1, -1)
        attn = None if bool(mask.all()) else attention_mask(mask, q.shape[1], kv.shape[1], causal=False)
        for block in self.blocks:
            q = block(q, kv, attn)
        out = self.out(self.norm(q))
        return out, torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)


def sincos_2d(side: int, dim: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
              ) -> torch.Tensor:
    """Fixed 2D sine-cosine position code [side*side, dim] of a row-major grid (as MAE / ViT): the first half of
    the channels encodes the column, the second the row, each as sin/cos at dim/4 geometric frequencies. The
    wavelengths span the grid (2 side cells down to 2 cells) rather than MAE's 1..10,000, so that on small grids
    neighbouring cells differ in most channels instead of a few."""
    if dim % 4:
        raise ValueError(f"sincos2d positions need a width divisible by 4, got {dim}")
    n = dim // 4
    omega = (torch.pi / side) * float(side) ** (torch.arange(n, device=device, dtype=torch.float32) / max(1, n - 1))
    y, x = torch.meshgrid(torch.arange(side, device=device, dtype=torch.float32),
                          torch.arange(side, device=device, dtype=torch.float32), indexing="ij")
    parts = [f(c.flatten()[:, None] * omega[None]) for c in (x, y) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1).to(dtype)


class TokenEncoder(nn.Module):
    """A projector followed by bidirectional pre-norm transformer blocks over its output tokens (padding masked),
    so every media token sees the whole item before the causal decoder reads it - a trainable ViT-style encoder on
    top of any tower, which lets tokens carry relations between parts of an image (where objects are relative to
    each other) instead of leaving all of that to the decoder's causal layers."""

    def __init__(self, cfg: ProjectorConfig, projector: nn.Module, dim: int):
        super().__init__()
        if dim % cfg.encoder_heads:
            raise ValueError(f"projector encoder: dim {dim} is not divisible by encoder_heads={cfg.encoder_heads}")
        if cfg.encoder_positions not in ("sincos2d", "none"):
            raise ValueError(f"encoder_positions={cfg.encoder_positions!r}; expected sincos2d or none")
        self.projector, self.sincos = projector, cfg.encoder_positions == "sincos2d"
        self.encoder = Transformer(TransformerConfig(dim=dim, depth=cfg.encoder_layers, n_heads=cfg.encoder_heads,
                                                     mlp_hidden=4 * dim, fused_qkv=True))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[M, T, D_in], [M, T] -> [M, T', D_out], [M, T'] (the inner projector's tokens, encoded)."""
        x, mask = self.projector(tokens, mask)
        side = int(round(x.shape[1] ** 0.5))
        if self.sincos and side * side == x.shape[1]:  # a square grid of tokens: tell the blocks where each sits
            x = x + sincos_2d(side, x.shape[-1], x.device, x.dtype)
        attn = None if bool(mask.all()) else attention_mask(mask, x.shape[1], x.shape[1], causal=False)
        return self.norm(self.encoder(x, mask=attn)), mask


PROJECTORS: dict[str, type[nn.Module]] = {"mlp": MLPProjector, "pixel_shuffle": PixelShuffleProjector,
                                          "qformer": QFormerProjector}


def build_projector(cfg: ProjectorConfig, in_dim: int, out_dim: int) -> nn.Module:
    """The projector of `cfg.kind` from `in_dim` tower features to `out_dim` language-model embeddings, with
    `cfg.encoder_layers` bidirectional blocks after it when set."""
    if cfg.kind not in PROJECTORS:
        raise ValueError(f"unknown projector {cfg.kind!r}; known: {', '.join(PROJECTORS)}")
    projector = PROJECTORS[cfg.kind](cfg, in_dim, out_dim)
    return TokenEncoder(cfg, projector, out_dim) if cfg.encoder_layers > 0 else projector


def output_tokens(cfg: ProjectorConfig, n_in: int) -> int:
    """How many tokens the projector emits for an item of `n_in` tower tokens."""
    if cfg.kind == "qformer":
        return cfg.queries
    if cfg.kind == "pixel_shuffle":
        return n_in // cfg.factor ** 2
    return n_in


__all__ = ["PROJECTORS", "MLPProjector", "PixelShuffleProjector", "ProjectorConfig", "QFormerProjector",
           "TokenEncoder", "build_projector", "grid_coords", "output_tokens", "sincos_2d"]
