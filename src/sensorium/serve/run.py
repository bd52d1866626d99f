"""Load what `sensorium serve` was pointed at (an index, an embedding model, a chat model) and run uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from sensorium.index import Index, is_index, set_search_threads
from sensorium.inference import ChatModel, Embedder, load
from sensorium.serve.app import MAX_BODY, create_app

log = logging.getLogger(__name__)


def load_for_serving(model: str | Path | None, index: str | Path | None = None,
                     chat: str | Path | None = None) -> dict[str, Any]:
    """`MODEL_OR_RUN` may be an index directory (its model comes with it), an embedding model or a chat model;
    `index` adds an index (checked against the embedding model), `chat` a language decoder."""
    embedder: Embedder | None = None
    chat_model: ChatModel | None = None
    if model is not None and is_index(model):
        if index is not None:
            raise ValueError(f"{model} is an index; give either it or --index, not both")
        model, index = None, model
    if model is not None:
        loaded = load(model)
        if isinstance(loaded, ChatModel):
            chat_model = loaded
        else:
            embedder = loaded
    if chat is not None:
        loaded = load(chat)
        if not isinstance(loaded, ChatModel):
            raise ValueError(f"--chat {chat}: not a language decoder run (it is a {loaded.kind})")
        chat_model = loaded
    opened = Index.open(index, model=embedder) if index is not None else None
    if opened is not None:
        embedder = opened.model
    return {"embedder": embedder, "index": opened, "chat": chat_model}


def serve(model: str | Path | None, index: str | Path | None = None, chat: str | Path | None = None,
          host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, max_body: int = MAX_BODY,
          log_level: str = "warning", threads: int = 1) -> None:
    """Load and serve until interrupted. `threads`: torch and faiss threads per request (1 serves concurrent
    requests best on a few cores; raise it for lower single-request latency on an idle many-core machine)."""
    import uvicorn

    torch.set_num_threads(threads)
    set_search_threads(threads)
    parts = load_for_serving(model, index, chat)
    app = create_app(parts["embedder"], parts["index"], parts["chat"], api_key=api_key, max_body=max_body)
    what = [f"{k}={getattr(v, 'name', None) or getattr(v, 'root', v)}" for k, v in parts.items() if v is not None]
    print(f"sensorium serve: {', '.join(what)} on http://{host}:{port}/ (OpenAI base_url http://{host}:{port}/v1)",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
