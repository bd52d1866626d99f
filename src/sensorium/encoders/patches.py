"""Image towers for decoders trained without a pretrained encoder (e.g. Sensorium World VQA): `image-patches`,
raw pixel patches as tokens with no weights (Fuyu-style; the projector learns the patch embedding), and
`image-convstem`, a small randomly initialised convolutional stem meant to be trained with the decoder
(`train_tower: true`), whose local, translation-equivariant features are quicker to learn from few images."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sensorium.encoders.base import Tower, register_tower


@register_tower("image-patches")
class PatchTower(Tower):
    """Images resized to `size` and cut into `patch` x `patch` pixel patches: tokens [B, (size/patch)^2, 3 patch^2]."""

    name = "image-patches"
    modality = "image"

    def __init__(self, size: int = 64, patch: int = 8) -> None:
        super().__init__()
        if size % patch:
            raise ValueError(f"image-patches: size {size} is not a multiple of patch {patch}")
        self.size, self.patch = size, patch
        self.dim = 3 * patch * patch

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.size // self.patch

    def prepare(self, values: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """PIL images (or a uint8 batch [B, 3, H, W], the loader's image convention) -> uint8 [B, 3, size, size]."""
        if isinstance(values, torch.Tensor):
            pixels = values
        else:
            arrays = []
            for image in values:
                if not isinstance(image, Image.Image):
                    raise TypeError(f"image-patches encodes PIL images, got {type(image).__name__}")
                image = image.convert("RGB")
                if image.size != (self.size, self.size):
                    image = image.resize((self.size, self.size), Image.BICUBIC)
                arrays.append(np.asarray(image))
            pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        if pixels.shape[-1] != self.size or pixels.shape[-2] != self.size:
            pixels = F.interpolate(pixels.float(), size=(self.size, self.size), mode="bilinear",
                                   antialias=True).round().clamp(0, 255).to(torch.uint8)
        return pixels

    def tokens(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 pixels [B, 3, size, size] -> patches in [-1, 1], row-major [B, grid^2, 3 patch^2], all real."""
        x = inputs.float() / 127.5 - 1.0
        patches = F.unfold(x, self.patch, stride=self.patch).transpose(1, 2).contiguous()
        return patches, torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Pooled features: the mean patch [B, 3 patch^2] (a weak baseline; decoders use `tokens`)."""
        return self.tokens(inputs)[0].mean(dim=1)

    def describe(self) -> dict[str, Any]:
        """Name, modality, dim, size and patch."""
        return {**super().describe(), "size": self.size, "patch": self.patch, "parameters": 0}


@register_tower("image-convstem")
class ConvStemTower(PatchTower):
    """Four 3x3 convolutions, the first three (stride 8) or two (stride 4) of them halving the resolution, each with
    batch norm and GELU (the CNN of Relation Networks' Sort-of-CLEVR model, with GELU), on size x size pixels -> a
    (size/stride)^2 grid of `width`-d tokens whose receptive field (31 or 23 px) covers a whole object; stride 4
    with a pixel-shuffle projector keeps 4x finer positions in the same token count. Randomly initialised: train it with the decoder
    (media.<m>.train_tower: true). Without the norms, features shrink layer by layer at random init and the
    decoder starts out blind to the image."""

    name = "image-convstem"

    def __init__(self, size: int = 64, width: int = 128, stride: int = 8) -> None:
        if stride not in (4, 8):
            raise ValueError(f"image-convstem: stride {stride} must be 4 or 8 (a (size/stride)^2 token grid)")
        super().__init__(size=size, patch=stride)
        chans = (3, width // 4, width // 2, width, width)
        down = 3 if stride == 8 else 2  # the first `down` convolutions halve the resolution
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv2d(chans[i], chans[i + 1], 3, stride=2 if i < down else 1, padding=1, bias=False)
            for i in range(4))
        self.norms = torch.nn.ModuleList(torch.nn.BatchNorm2d(c) for c in chans[1:])
        self.dim = width

    def tokens(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 pixels [B, 3, size, size] -> [B, (size/stride)^2, width] row-major, all real."""
        x = inputs.to(self.convs[0].weight.dtype) / 127.5 - 1.0
        for conv, norm in zip(self.convs, self.norms):
            x = F.gelu(norm(conv(x)))
        tokens = x.flatten(2).transpose(1, 2).contiguous()
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def describe(self) -> dict[str, Any]:
        """Name, modality, dim, size; the weights are the run's own (random init, trained with the decoder)."""
        return {"name": self.name, "modality": self.modality, "dim": self.dim, "size": self.size,
                "weights": "random init, trained with the decoder"}
