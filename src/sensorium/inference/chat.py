"""A language decoder behind the message format the server speaks (OpenAI chat: `content` a string or a list of
parts `{"type": "text" | "image_url" | "input_audio" | "image" | "audio", ...}`): `chat` answers, `stream`
yields the answer piece by piece, both with the same generation options and their validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from sensorium.inference.items import ItemError, decode_base64, to_value
from sensorium.models.generation import GenerationConfig
from sensorium.models.template import placeholder
from sensorium.models.vlm import VisionLanguageModel

ROLES = ("system", "user", "assistant")


@dataclass
class ChatResult:
    """One answer: its text, why it ended (stop | length), and token counts (the prompt's text tokens, each media
    item counted as its one placeholder token)."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    sources: list[dict[str, Any]] = field(default_factory=list)  # retrieval-augmented answers cite these


def generation_config(max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                      stop: Sequence[str] | str | None = None, seed: int | None = None, beams: int = 1
                      ) -> GenerationConfig:
    """Generation options checked at the door: a value out of range is a ValueError naming it and its range."""
    checks = [("max_tokens", max_tokens, max_tokens >= 1, ">= 1"), ("temperature", temperature, temperature >= 0, ">= 0"),
              ("top_p", top_p, 0 < top_p <= 1, "in (0, 1]"), ("top_k", top_k, top_k >= 0, ">= 0"),
              ("beams", beams, beams >= 1, ">= 1")]
    for name, value, ok, rule in checks:
        if not ok:
            raise ValueError(f"{name}={value}: must be {rule}")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop={stop!r}: stop sequences must be non-empty strings")
    return GenerationConfig(max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p),
                            top_k=int(top_k), num_beams=int(beams), stop=stops, seed=seed)


def _part_value(part: dict[str, Any], where: str) -> tuple[str, Any]:
    """One non-text content part -> (modality, decoded value)."""
    kind = part.get("type")
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str) or not url:
            raise ItemError(f"{where}: image_url.url is missing")
        if url.startswith(("http://", "https://")):
            raise ItemError(f"{where}: image URLs are not fetched (no network); send a data: URI")
        return "image", to_value("image", url, where)
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        data = audio.get("data") if isinstance(audio, dict) else None
        if not isinstance(data, str) or not data:
            raise ItemError(f"{where}: input_audio.data is missing (base64 audio bytes)")
        return "audio", to_value("audio", decode_base64(data, f"{where} input_audio.data"), where)
    if kind in ("image", "audio") and kind in part:  # Python callers: a path, bytes, PIL image or array
        return kind, to_value(kind, part[kind], where)
    raise ItemError(f"{where}: unknown content part type {kind!r} (text, image_url, input_audio)")


def to_conversation(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, str]], dict[str, list[Any]]]:
    """OpenAI-style messages -> the template's conversation (text with `<image>`/`<audio>` placeholders where the
    parts were) and the media values in placeholder order."""
    if not messages:
        raise ItemError("messages is empty")
    conversation, media = [], {}
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ItemError(f"messages[{i}]: needs a role of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            pieces = []
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                if not isinstance(part, dict):
                    raise ItemError(f"{where}: a content part is an object with a type")
                if part.get("type") == "text":
                    pieces.append(str(part.get("text", "")))
                    continue
                modality, value = _part_value(part, where)
                media.setdefault(modality, []).append(value)
                pieces.append(placeholder(modality))
            text = "".join(pieces)
        else:
            raise ItemError(f"messages[{i}].content must be a string or a list of parts")
        conversation.append({"role": message["role"], "content": text})
    if conversation[-1]["role"] == "assistant":
        raise ItemError("the last message is the assistant's: nothing to answer")
    if not any(m["content"].strip() for m in conversation):
        raise ItemError("every message is empty")
    return conversation, media


class ChatModel:
    """A trained language decoder over modalities (`sensorium vlm train` runs and the packaged decoder)."""

    kind = "chat"

    def __init__(self, model: VisionLanguageModel, name: str = "decoder"):
        self.model, self.name = model.eval(), name

    @property
    def modalities(self) -> list[str]:
        """The media the decoder reads (text is always read)."""
        return list(self.model.towers)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "modalities": ["text", *self.modalities],
                "context": self.model.lm.cfg.max_positions}

    def _prepare(self, messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, str]], dict[str, list[Any]], int]:
        conversation, media = to_conversation(messages)
        for modality in media:
            if modality not in self.model.towers:
                raise ValueError(f"{self.name} reads text and {', '.join(self.modalities) or 'nothing else'}, "
                                 f"not {modality}")
        encoded = self.model.tokenizer.encode_batch([conversation], generation=True)[0]
        return conversation, media, len(encoded.ids)

    def chat(self, messages: Sequence[dict[str, Any]], **options: Any) -> ChatResult:
        """Answer the conversation. Options: max_tokens, temperature, top_p, top_k, stop, seed, beams."""
        config = generation_config(**options)
        conversation, media, prompt_tokens = self._prepare(messages)
        out = self.model.generate([conversation], [media], config)[0]
        finish = "length" if out.finish_reason in ("length", "context") else "stop"
        return ChatResult(out.text, finish, prompt_tokens, len(out.tokens))

    def stream(self, messages: Sequence[dict[str, Any]], **options: Any) -> Iterator[str]:
        """The answer as text pieces, in order, as they are decoded (beam search is not streamed)."""
        config = generation_config(**options)
        if config.num_beams > 1:
            raise ValueError("beam search cannot stream; use beams=1 or chat()")
        conversation, media, _ = self._prepare(messages)
        yield from self.model.stream(conversation, media, config)

    def ask(self, text: str, **media_and_options: Any) -> str:
        """One question with media: `ask("What shape is it?", image="scene.png")`."""
        media = {m: media_and_options.pop(m) for m in list(media_and_options) if m in ("image", "audio")}
        parts: list[dict[str, Any]] = []
        for modality, value in media.items():
            for item in value if isinstance(value, list) else [value]:
                parts.append({"type": modality, modality: item})
        parts.append({"type": "text", "text": text})
        return self.chat([{"role": "user", "content": parts}], **media_and_options).text
