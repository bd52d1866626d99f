"""Array <-> bytes helpers shared by the array-valued modalities (depth, segmentation, video, time series):
lossless PNG for 2-D maps and `.npy` for exact arrays, both byte-deterministic and refusing bad input clearly."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, PngImagePlugin

from sensorium.modalities.image import open_image
from sensorium.modalities.registry import DecodeError


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as `.npy` bytes (no pickle, deterministic header)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    """`.npy` bytes -> array; object arrays (which would need pickle) are refused."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"not a readable .npy array ({type(exc).__name__}: {exc})") from None


def png_bytes(array: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """A uint8 (gray or RGB) or uint16 (gray) array as lossless PNG bytes, with optional tEXt metadata."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_array(data: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """PNG bytes -> (array, tEXt metadata) through the decompression-bomb guard of `open_image`."""
    image = open_image(data)
    text = dict(getattr(image, "text", {}) or {})
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image, dtype=np.uint16), text
    if image.mode in ("L", "RGB"):
        return np.asarray(image), text
    if image.mode == "I":
        return np.asarray(image, dtype=np.int64), text
    if image.mode in ("P", "1"):
        return np.asarray(image.convert("L")), text
    return np.asarray(image.convert("RGB")), text
