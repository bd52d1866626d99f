"""Text: UTF-8 captions, prompts and documents."""

from __future__ import annotations

from sensorium.modalities.registry import DecodeError, Modality, register


def _decode(data: bytes, ext: str) -> str:
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"text is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text:
        raise DecodeError("text is empty")
    return text


def _encode(value: str) -> tuple[str, bytes]:
    return "txt", value.encode("utf-8")


TEXT = register(Modality("text", ("txt", "text", "caption"), _decode, _encode, default_tower="minilm-l6",
                         description="natural-language text", metadata={"inline": True}, tokenizer="bpe"))
