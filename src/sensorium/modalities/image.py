"""Images: PNG/JPEG/WebP files decoded to RGB PIL images. `open_image` is the one guarded entry point that
every PNG-based modality (depth, segmentation, video) uses: it refuses decompression bombs before decoding."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image

from sensorium.modalities.registry import DecodeError, Modality, register


def open_image(data: bytes) -> Image.Image:
    """Open and fully load image bytes, refusing images larger than PIL's decompression-bomb limit
    (`PIL.Image.MAX_IMAGE_PIXELS`) from the header alone, before any pixel is decompressed."""
    try:
        with warnings.catch_warnings():  # PIL only warns between 1x and 2x its limit; we refuse below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"image refused as a decompression bomb ({exc}; PIL.Image.MAX_IMAGE_PIXELS = "
                          f"{Image.MAX_IMAGE_PIXELS}, raise that limit only for sources you trust)") from None
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"not a readable image ({type(exc).__name__}: {exc})") from None
    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.size[0] * image.size[1]
    if limit is not None and pixels > limit:
        raise DecodeError(f"image refused as a possible decompression bomb: {image.size[0]}x{image.size[1]} = "
                          f"{pixels} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS = {limit} "
                          "(raise that limit only for sources you trust)")
    try:
        image.load()
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"not a readable image ({type(exc).__name__}: {exc})") from None
    return image


def _decode(data: bytes, ext: str) -> Image.Image:
    image = open_image(data)
    if image.mode in ("RGBA", "LA", "P"):
        # Composite transparency onto white, as clipart and screenshots expect.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _encode(value: Image.Image) -> tuple[str, bytes]:
    buf = io.BytesIO()
    value.save(buf, format="PNG", optimize=False)
    return "png", buf.getvalue()


def to_tensor(value: Image.Image) -> Any:
    """RGB image -> uint8 tensor [3, H, W] (models normalise; uint8 keeps batches small in workers)."""
    # the HWC -> CHW copy in numpy: torch's permuted copy goes through its thread pool, which stalls on busy cores
    return torch.from_numpy(np.ascontiguousarray(np.asarray(value.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)))


IMAGE = register(Modality("image", ("png", "jpg", "jpeg", "webp", "bmp"), _decode, _encode,
                          default_tower="efficientnet-lite0", description="RGB still images",
                          to_tensor=to_tensor, preview=lambda value: value, tokenizer="patches"))
