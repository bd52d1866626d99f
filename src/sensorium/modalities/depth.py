"""Depth maps: float32 [H, W] in [0, 1] (0 at the camera, 1 at the far plane), stored as 16-bit PNG
(`x.depth.png`, quantised to 1/65535) or exactly as `x.depth.npy`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from sensorium.modalities.arrays import from_npy, png_array, png_bytes
from sensorium.modalities.registry import DecodeError, Modality, register


def _decode(data: bytes, ext: str) -> np.ndarray:
    if ext.endswith("npy"):
        depth = from_npy(data).astype(np.float32)
    else:
        array, _ = png_array(data)
        if array.ndim != 2:
            raise DecodeError(f"a depth PNG must be single-channel, got shape {array.shape}")
        depth = array.astype(np.float32) / (65535.0 if array.dtype == np.uint16 else 255.0)
    if depth.ndim != 2:
        raise DecodeError(f"depth must be a 2-D map, got shape {depth.shape}")
    return depth


def _encode(value: np.ndarray) -> tuple[str, bytes]:
    depth = np.clip(np.asarray(value, dtype=np.float64), 0.0, 1.0)
    return "depth.png", png_bytes(np.round(depth * 65535.0).astype(np.uint16))


def _to_tensor(value: np.ndarray) -> Any:
    """Depth -> float32 tensor [1, H, W]."""
    return torch.from_numpy(np.asarray(value, dtype=np.float32).copy())[None]


def _preview(value: np.ndarray) -> Image.Image:
    """Near is bright, far is dark."""
    return Image.fromarray(np.round((1.0 - np.clip(value, 0, 1)) * 255).astype(np.uint8)).convert("RGB")


DEPTH = register(Modality("depth", ("depth.png", "depth.npy"), _decode, _encode, description="depth maps in [0, 1]",
                          to_tensor=_to_tensor, preview=_preview, tokenizer="patches",
                          metadata={"tokenizer_options": {"channels": 1}}))
