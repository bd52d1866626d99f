"""What users hand to `embed`, `chat` and the server, turned into the values towers read: file paths, raw bytes,
`data:` URIs, PIL images, numpy arrays and strings, decoded through the modality registry. A bad item is an error
naming its position and what is wrong with it, never a silent guess."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from sensorium import modalities
from sensorium.modalities import DecodeError, Waveform
from sensorium.modalities.audio import SAMPLE_RATE

# magic bytes -> file extension, for bytes that arrive without a name
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png"), (b"\xff\xd8\xff", 0, "jpg"), (b"GIF8", 0, "gif"), (b"WEBP", 8, "webp"),
    (b"WAVE", 8, "wav"), (b"fLaC", 0, "flac"), (b"OggS", 0, "ogg"), (b"ID3", 0, "mp3"),
)
_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)",
                       re.S)
_MIME_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg", "image/webp": "webp", "image/gif": "gif",
             "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/flac": "flac", "audio/ogg": "ogg",
             "audio/mpeg": "mp3", "text/plain": "txt"}


class ItemError(ValueError):
    """An item given to embed/chat/search cannot be read as the modality asked for; the message names it."""


def sniff(data: bytes) -> str | None:
    """The file extension that the leading bytes announce (png, jpg, wav, flac, ...), or None."""
    for magic, offset, ext in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return ext
    return None


def parse_data_uri(uri: str) -> tuple[bytes, str | None]:
    """`data:[mime][;base64],payload` -> (bytes, extension from the MIME type or the bytes themselves)."""
    m = _DATA_URI.fullmatch(uri.strip())
    if m is None:
        raise ItemError(f"not a data URI (expected data:<mime>;base64,<payload>): {uri[:40]!r}...")
    payload = m.group("data")
    try:
        data = base64.b64decode(payload, validate=True) if m.group("b64") else payload.encode()
    except (binascii.Error, ValueError) as exc:
        raise ItemError(f"the data URI's base64 payload does not decode ({exc})") from None
    return data, _MIME_EXT.get((m.group("mime") or "").lower()) or sniff(data)


def decode_base64(text: str, what: str = "item") -> bytes:
    """Plain base64 text -> bytes, or an ItemError naming `what`."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ItemError(f"{what}: not valid base64 ({exc})") from None


def _decode_bytes(modality: str, data: bytes, ext: str | None, where: str) -> Any:
    ext = ext or sniff(data) or ("txt" if modality == "text" else None)
    if ext is None:
        raise ItemError(f"{where}: cannot tell the format of {len(data)} bytes (no known file signature); pass a "
                        f"file path or a data URI with a MIME type")
    found = modalities.for_extension(ext)
    if found is None or found.name != modality:
        raise ItemError(f"{where}: .{ext} data is {found.name if found else 'of no known modality'}, not {modality}")
    try:
        return found.decode(data, ext)
    except DecodeError as exc:
        raise ItemError(f"{where}: cannot decode as {modality}: {exc}") from None


def to_value(modality: str, item: Any, where: str = "item") -> Any:
    """One user item -> the decoded value a `modality` tower reads (str, RGB PIL image, 16 kHz Waveform, ...)."""
    if isinstance(item, Path) or (isinstance(item, str) and modality != "text"):
        text = str(item)
        if text.startswith("data:"):
            data, ext = parse_data_uri(text)
            return _decode_bytes(modality, data, ext, where)
        path = Path(text)
        if not path.is_file():
            raise ItemError(f"{where}: {text[:80]!r} is not a file (give a path, bytes, a data URI or a decoded "
                            f"{modality} value)")
        ext = path.name.split(".", 1)[1] if "." in path.name else None
        return _decode_bytes(modality, path.read_bytes(), ext and ext.lower(), f"{where} ({path})")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _decode_bytes(modality, bytes(item), None, where)
    if modality == "text":
        if not isinstance(item, str):
            raise ItemError(f"{where}: text must be a string, got {type(item).__name__}")
        if not item.strip():
            raise ItemError(f"{where}: empty text")
        return item
    if modality == "image":
        if isinstance(item, Image.Image):
            return item.convert("RGB")
        if isinstance(item, np.ndarray) and item.ndim in (2, 3):
            array = item if item.dtype == np.uint8 else (np.clip(item, 0, 1) * 255).round().astype(np.uint8)
            return Image.fromarray(array).convert("RGB")
    if modality == "audio":
        if isinstance(item, Waveform):
            return item
        if isinstance(item, np.ndarray) and item.ndim == 1:
            return Waveform(item.astype(np.float32), SAMPLE_RATE)
    if hasattr(item, "shape") or not isinstance(item, (str, bytes)):
        # other modalities (depth, time series, ...) take their decoded value as it is
        return item
    raise ItemError(f"{where}: cannot read a {type(item).__name__} as {modality}")


def to_values(modality: str, items: Sequence[Any] | Any) -> list[Any]:
    """A batch of user items (a single item is a batch of one) -> decoded values; errors name the item's index."""
    if isinstance(items, (str, bytes, Path, Image.Image, Waveform)) or (
            isinstance(items, np.ndarray) and modality in ("image", "audio") and items.ndim <= (1 if modality ==
                                                                                                  "audio" else 3)):
        items = [items]
    items = list(items)
    if not items:
        raise ItemError(f"no {modality} items given")
    return [to_value(modality, item, f"{modality} item {i}") for i, item in enumerate(items)]
