"""The OpenAI request and response shapes for embeddings and chat completions, as vLLM and llama.cpp serve them,
turned into calls of the library's own `Embedder.embed` and `ChatModel.chat`/`stream`. Plain functions over dicts,
so the server stays a thin door and tests can call them without HTTP."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from sensorium.inference import ChatModel, Embedder
from sensorium.inference.chat import _part_value
from sensorium.inference.items import ItemError

GENERATION_KEYS = {"max_tokens": "max_tokens", "max_completion_tokens": "max_tokens", "temperature": "temperature",
                   "top_p": "top_p", "stop": "stop", "seed": "seed", "top_k": "top_k"}


def _number(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise ItemError(f"{key}: must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


def _embedding_items(raw: Any) -> list[tuple[str, Any]]:
    """`input` -> [(modality, value)]: strings are text; objects are content parts (`text`, `image_url` with a data URI,
    `input_audio` with base64) or `{"content": [one part]}` (llama.cpp's multimodal embedding input)."""
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ItemError("input: must be a non-empty string or list")
    out = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if isinstance(item, str):
            if not item.strip():
                raise ItemError(f"{where}: empty text")
            out.append(("text", item))
            continue
        if isinstance(item, int) or (isinstance(item, list) and item and all(isinstance(t, int) for t in item)):
            raise ItemError(f"{where}: token-id input is not supported; send text")
        if not isinstance(item, dict):
            raise ItemError(f"{where}: a string or a content part object")
        parts = item.get("content") if "content" in item else [item]
        if isinstance(parts, str):
            parts = [{"type": "text", "text": parts}]
        if not isinstance(parts, list) or len(parts) != 1 or not isinstance(parts[0], dict):
            raise ItemError(f"{where}: one content part per input (one vector per input); send several inputs instead")
        part = parts[0]
        if part.get("type") == "text":
            text = part.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ItemError(f"{where}.text: empty text")
            out.append(("text", text))
        else:
            check_remote_part(part, where)
            try:
                out.append(_part_value(part, where))
            except ItemError as exc:
                raise ItemError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
    return out


def check_remote_part(part: dict[str, Any], where: str) -> None:
    """Media from a client arrive as data (a data: URI, base64): a string that could name a file on the server is
    refused, so no request reads the server's files."""
    kind = part.get("type")
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if isinstance(url, str) and url and not url.startswith(("data:", "http://", "https://")):
            raise ItemError(f"{where}.image_url.url: send the image as a data: URI (data:image/png;base64,...)")
    elif kind not in ("text", "input_audio"):
        raise ItemError(f"{where}: unknown content part type {kind!r} (text, image_url, input_audio)")


def check_messages(messages: Any) -> None:
    """Every media part of chat messages from a client is data, never a server path."""
    if not isinstance(messages, list) or not messages:
        raise ItemError("messages: a non-empty list of {role, content}")
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict):
                    check_remote_part(part, f"messages[{i}].content[{j}]")


def embeddings(model: Embedder, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/embeddings: one L2-normalised vector per input, `encoding_format` float or base64."""
    items = _embedding_items(body.get("input"))
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ItemError(f"encoding_format: {fmt!r} is not float or base64")
    if body.get("dimensions") not in (None, model.dim):
        raise ItemError(f"dimensions: this model gives {model.dim}-d vectors, not {body['dimensions']!r}")
    for modality in {m for m, _ in items}:
        model.check_modality(modality)
    vectors: dict[int, np.ndarray] = {}
    for modality in dict.fromkeys(m for m, _ in items):
        at = [i for i, (m, _) in enumerate(items) if m == modality]
        for i, vec in zip(at, model.embed(modality, [items[i][1] for i in at]).numpy()):
            vectors[i] = vec
    data = []
    for i in range(len(items)):
        vec = vectors[i].astype("<f4")
        value: Any = base64.b64encode(vec.tobytes()).decode() if fmt == "base64" else vec.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(len(v.split()) if m == "text" else 1 for m, v in items)
    return {"object": "list", "data": data, "model": model.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def generation_options(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI sampling fields -> ChatModel options (validated there: a bad value is an error naming it)."""
    if body.get("n", 1) != 1:
        raise ItemError("n: only n=1 is supported")
    options = {}
    for key, name in GENERATION_KEYS.items():
        if key in body and body[key] is not None:
            if key == "stop":
                options[name] = body[key]
            else:
                options[name] = _number(body, key, int if key in ("max_tokens", "max_completion_tokens", "seed", "top_k")
                                        else float)
    return options


def _count_tokens(model: ChatModel, text: str) -> int:
    return len(model.model.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids) if text else 0


def chat_completion(model: ChatModel, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/chat/completions without streaming."""
    messages = body.get("messages")
    check_messages(messages)
    result = model.chat(messages, **generation_options(body))
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                      "total_tokens": result.prompt_tokens + result.completion_tokens}}


def chat_stream(model: ChatModel, body: dict[str, Any]) -> Iterator[str]:
    """POST /v1/chat/completions with `stream: true`: server-sent `chat.completion.chunk` events, a usage chunk when
    `stream_options.include_usage`, then `data: [DONE]`. The request is checked before the first byte is sent."""
    messages = body.get("messages")
    check_messages(messages)
    options = generation_options(body)
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise ItemError("stream_options: must be an object")
    pieces = model.stream(messages, **options)
    first = next(pieces, None)  # raises here (before any byte is sent) on bad messages or options
    _, _, prompt_tokens = model._prepare(messages)
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model.name,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(payload)}\n\n"

    def events() -> Iterator[str]:
        text = first or ""
        yield chunk({"role": "assistant", "content": ""})
        if first:
            yield chunk({"content": first})
        for piece in pieces:
            text += piece
            yield chunk({"content": piece})
        completion = _count_tokens(model, text)
        finish = "length" if completion >= options.get("max_tokens", 64) else "stop"
        yield chunk({}, finish)
        if stream_options.get("include_usage"):
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                     "total_tokens": prompt_tokens + completion}
            payload = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model.name,
                       "choices": [], "usage": usage}
            yield f"data: {json.dumps(payload)}\n\n"
        yield "data: [DONE]\n\n"

    return events()
