"""Images: PNG/JPEG/WebP files decoded to RGB PIL images."""

from __future__ import annotations

import io

from PIL import Image

from .registry import DecodeError, Modality, register


def _decode(data: bytes, ext: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"not a readable image ({type(exc).__name__}: {exc})") from None
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


IMAGE = register(Modality("image", ("png", "jpg", "jpeg", "webp", "bmp"), _decode, _encode,
                          default_tower="efficientnet-lite0", description="RGB still images"))
