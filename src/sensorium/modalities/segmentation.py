"""Segmentation maps: integer [H, W] arrays of instance/class ids (0 = background), stored as 8- or 16-bit
PNG (`x.seg.png`) or `x.seg.npy`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from sensorium.modalities.arrays import from_npy, npy_bytes, png_array, png_bytes
from sensorium.modalities.registry import DecodeError, Modality, register

# A fixed, well-separated palette for previews (id 0 = black background).
_PALETTE = np.array([[0, 0, 0]] + [[(37 * i) % 256, (101 * i + 80) % 256, (173 * i + 40) % 256] for i in range(1, 256)],
                    dtype=np.uint8)


def _decode(data: bytes, ext: str) -> np.ndarray:
    array = from_npy(data) if ext.endswith("npy") else png_array(data)[0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise DecodeError(f"a segmentation map must be a 2-D integer array, got {array.dtype} {array.shape}")
    return array


def _encode(value: np.ndarray) -> tuple[str, bytes]:
    array = np.asarray(value)
    if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
        return "seg.npy", npy_bytes(array.astype(np.int64))
    return "seg.png", png_bytes(array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16))


def _to_tensor(value: np.ndarray) -> Any:
    """Segmentation -> int64 tensor [H, W]."""
    return torch.from_numpy(np.asarray(value, dtype=np.int64).copy())


def _preview(value: np.ndarray) -> Image.Image:
    """Each id in its own colour."""
    return Image.fromarray(_PALETTE[np.asarray(value, dtype=np.int64) % 256])


SEGMENTATION = register(Modality("segmentation", ("seg.png", "seg.npy"), _decode, _encode,
                                 description="instance/class id maps, 0 = background",
                                 to_tensor=_to_tensor, preview=_preview))
