"""Sensorium: unified multimodal models on PyTorch — align, fuse, retrieve, answer and serve any modality.

`sensorium.load(path_or_name)` and `sensorium.list_models()` are the front door (sensorium/api.py); they are
imported on first use, so `import sensorium` stays light."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Index", "build_index", "list_models", "load", "search"]


def __getattr__(name: str) -> Any:
    if name in ("load", "list_models", "ChatModel", "ChatResult", "Embedder", "ItemError", "Index", "Hit",
                "build_index", "search"):
        from sensorium import api

        return getattr(api, name)
    raise AttributeError(f"module 'sensorium' has no attribute {name!r}")
