"""A parameter-free image tower: raw pixel patches as tokens (Fuyu-style). The projector that follows learns the
patch embedding, so a decoder can be trained on images with no pretrained encoder (e.g. Sensorium World VQA)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .base import Tower, register_tower


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
