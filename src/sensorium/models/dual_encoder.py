"""CLIP / SigLIP-style dual encoder: a ViT image tower and a text transformer, each pooled and projected
into one embedding space, scored with a learned logit scale (and, for SigLIP, a logit bias)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.nn import MLP, Attention, Transformer, TransformerConfig, attention_mask, make_norm


@dataclass
class VisionConfig:
    """ViT image tower: patch embedding, optional class token, transformer, pooling head, projection."""

    image_size: int = 224
    patch_size: int = 16
    channels: int = 3
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    patch_bias: bool = False  # SigLIP: True; CLIP: False
    class_token: bool = True
    pre_norm: bool = True  # LayerNorm after the embeddings (CLIP's pre_layrnorm / open_clip's ln_pre)
    pool: str = "cls"  # cls | mean | attn (SigLIP attention-pool head) | none
    norm_after_pool: bool = False  # final norm on the pooled vector only (open_clip final_ln_after_pool)
    proj_dim: int | None = 512  # None: no projection (SigLIP)
    proj_bias: bool = False
    # pool "cls": the last block computes only the class token's row (its attention still reads every token):
    # the same embedding, ~1/depth less work. Per-token features (`tokens`) are always computed in full
    prune_last_block: bool = True


@dataclass
class TextConfig:
    """Text tower: token + learned position embeddings, transformer, final norm, pooling, projection."""

    vocab_size: int = 49408
    context_length: int = 77
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    causal: bool = True
    mask_padding: bool = True  # False: attend to pad tokens too (SigLIP was trained that way)
    pool: str = "eos"  # eos (first eos_token_id) | argmax (highest id) | last | first
    eos_token_id: int = 49407
    pad_token_id: int = 0
    proj_dim: int | None = 512
    proj_bias: bool = False
    prune_last_block: bool = True  # the last block computes only the pooled token's row (as VisionConfig)


@dataclass
class DualEncoderConfig:
    """Both towers plus the contrastive head's initial values."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    logit_scale: float = math.log(1 / 0.07)
    logit_bias: float | None = None  # SigLIP's sigmoid-loss bias; None for CLIP


class AttentionPoolHead(nn.Module):
    """SigLIP's multi-head attention pooling: a learned probe attends over tokens, then a residual MLP."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.attn = Attention(cfg.dim, cfg.n_heads)
        self.norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg.dim, cfg.mlp_hidden, cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, D]."""
        h = self.attn(self.probe.expand(x.shape[0], -1, -1), context=x)
        return (h + self.mlp(self.norm(h)))[:, 0]


class VisionTower(nn.Module):
    """Images [B, C, H, W] (already normalized) -> pooled, projected features [B, E]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        t = cfg.transformer
        self.patch_embed = nn.Conv2d(cfg.channels, t.dim, cfg.patch_size, cfg.patch_size, bias=cfg.patch_bias)
        n_pos = (cfg.image_size // cfg.patch_size) ** 2 + int(cfg.class_token)
        self.class_embed = nn.Parameter(torch.zeros(t.dim)) if cfg.class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(n_pos, t.dim))
        self.pre_norm = make_norm(t.norm, t.dim, t.norm_eps) if cfg.pre_norm else nn.Identity()
        self.transformer = Transformer(t)
        self.post_norm = make_norm(t.norm, t.dim, t.norm_eps)
        self.head = AttentionPoolHead(t) if cfg.pool == "attn" else None
        self.proj = nn.Linear(t.dim, cfg.proj_dim, bias=cfg.proj_bias) if cfg.proj_dim else None

    @property
    def out_dim(self) -> int:
        """Size of the output features."""
        return self.cfg.proj_dim or self.cfg.transformer.dim

    def embed_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> patch tokens [B, N, D]: the stride-p convolution's weights applied to the
        unfolded patches as one GEMM, the same map (cuDNN runs this convolution at a fraction of GEMM speed)."""
        b, c, h, w = pixels.shape
        p = self.cfg.patch_size
        if c != self.cfg.channels:
            raise ValueError(f"images have {c} channels, the vision tower expects {self.cfg.channels}")
        if torch.is_autocast_enabled(pixels.device.type):  # copy the patches once, in the autocast dtype
            pixels = pixels.to(torch.get_autocast_dtype(pixels.device.type))
        gh, gw = h // p, w // p  # like the convolution, a remainder of fewer than p pixels is dropped
        patches = pixels[:, :, : gh * p, : gw * p].reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        conv = self.patch_embed
        return F.linear(patches.reshape(b, gh * gw, c * p * p), conv.weight.flatten(1), conv.bias)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """The transformer's input [B, T, D]: patch tokens, class token, positions, pre-norm."""
        x = self.embed_patches(pixels)
        if self.class_embed is not None:
            x = torch.cat([self.class_embed.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        if x.shape[1] != self.pos_embed.shape[0]:
            raise ValueError(f"image gives {x.shape[1]} tokens but the model has {self.pos_embed.shape[0]} "
                             f"positions (expected {self.cfg.image_size}px images)")
        return self.pre_norm(x + self.pos_embed.to(x.dtype))

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-token features [B, T, D] after the transformer (before the final norm)."""
        return self.transformer(self.embed(pixels))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [B, T, D] -> one vector [B, D] by the configured head."""
        kind = self.cfg.pool
        if self.cfg.norm_after_pool:
            return self.post_norm(x[:, 0] if kind == "cls" else x[:, int(self.cfg.class_token):].mean(1))
        if kind == "cls":  # the norm is per token: normalising the class token alone gives the same vector
            return self.post_norm(x[:, 0])
        x = self.post_norm(x)
        if kind == "attn":
            return self.head(x)
        if kind == "mean":
            return x[:, int(self.cfg.class_token):].mean(1)
        raise ValueError(f"unknown vision pool {kind!r}")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, out_dim]."""
        if self.cfg.pool == "cls" and self.cfg.prune_last_block:  # the class token's row only: x[:, 0] below
            x = self.embed(pixels)
            x = self.transformer(x, keep=torch.zeros(x.shape[0], 1, dtype=torch.long, device=x.device))
        else:
            x = self.tokens(pixels)
        pooled = self.pool(x)
        return self.proj(pooled) if self.proj is not None else pooled


class TextTower(nn.Module):
    """Token ids [B, L] (+ optional padding mask) -> pooled, projected features [B, E]."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        t = cfg.transformer
        self.token_embed = nn.Embedding(cfg.vocab_size, t.dim)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.context_length, t.dim))
        self.transformer = Transformer(t)
        self.final_norm = make_norm(t.norm, t.dim, t.norm_eps)
        self.proj = nn.Linear(t.dim, cfg.proj_dim, bias=cfg.proj_bias) if cfg.proj_dim else None

    @property
    def out_dim(self) -> int:
        """Size of the output features."""
        return self.cfg.proj_dim or self.cfg.transformer.dim

    def tokens(self, ids: torch.Tensor, padding: torch.Tensor | None = None,
               keep: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token features [B, L, D] after the final norm; `padding` [B, L] is True on real tokens. With
        `keep` [B, K] (positions) only those rows, [B, K, D], and the last block computes only them."""
        length = ids.shape[1]
        if length > self.cfg.context_length:
            raise ValueError(f"text of {length} tokens exceeds context_length={self.cfg.context_length}")
        x = self.token_embed(ids) + self.pos_embed[:length]
        padding = padding if self.cfg.mask_padding else None
        mask = attention_mask(padding, length, length, causal=self.cfg.causal) if padding is not None else None
        keep_mask = None
        if keep is not None and (self.cfg.causal or padding is not None):  # queries at `keep`, keys everywhere
            keep_mask = torch.arange(length, device=ids.device) <= keep[..., None] if self.cfg.causal else \
                torch.ones(*keep.shape, length, dtype=torch.bool, device=ids.device)
            if padding is not None:
                keep_mask = keep_mask & padding.bool()[:, None, :]
            keep_mask = (keep_mask | ~keep_mask.any(-1, keepdim=True))[:, None]  # as attention_mask: no empty row
        x = self.transformer(x, mask=mask, is_causal=self.cfg.causal and mask is None, keep=keep,
                             keep_mask=keep_mask)
        return self.final_norm(x)

    def pool_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Position [B] of the pooled token in each row of ids [B, L] (EOS, highest id, last or first)."""
        kind = self.cfg.pool
        if kind == "last":
            return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        if kind == "first":
            return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
        if kind == "argmax":
            return ids.argmax(dim=-1)
        if kind == "eos":
            return (ids == self.cfg.eos_token_id).int().argmax(dim=-1)
        raise ValueError(f"unknown text pool {kind!r}")

    def pool(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Tokens [B, L, D] -> [B, D] at the configured position (`pool_index`)."""
        return x[torch.arange(x.shape[0], device=x.device), self.pool_index(ids)]

    def forward(self, ids: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L] -> [B, out_dim]."""
        if self.cfg.prune_last_block:  # the pooled row only
            pooled = self.tokens(ids, padding, keep=self.pool_index(ids)[:, None])[:, 0]
        else:
            pooled = self.pool(self.tokens(ids, padding), ids)
        return self.proj(pooled) if self.proj is not None else pooled


class DualEncoder(nn.Module):
    """Image and text towers with a contrastive head (CLIP softmax or SigLIP sigmoid logits)."""

    def __init__(self, cfg: DualEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.vision = VisionTower(cfg.vision)
        self.text = TextTower(cfg.text)
        if self.vision.out_dim != self.text.out_dim:
            raise ValueError(f"tower dims differ: vision {self.vision.out_dim}, text {self.text.out_dim}")
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.logit_bias))) if cfg.logit_bias is not None else None

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image embeddings [B, E] (L2-normalized if asked)."""
        z = self.vision(pixels)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, ids: torch.Tensor, padding: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
        """Text embeddings [B, E] (L2-normalized if asked)."""
        z = self.text(ids, padding)
        return F.normalize(z, dim=-1) if normalize else z

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """Logits per image [B_img, B_txt]: scaled cosine similarities (+ bias for SigLIP)."""
        logits = self.encode_image(pixels, True) @ self.encode_text(ids, padding, True).T * self.logit_scale.exp()
        return logits + self.logit_bias if self.logit_bias is not None else logits
