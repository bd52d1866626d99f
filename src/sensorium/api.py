"""The Python front door. Everything here is the library's own implementation, the same one the CLI and the
server call:

    import sensorium
    model = sensorium.load("default")                      # packaged composer: image, text, speech
    vectors = model.embed("text", ["a red circle", "a dog"])   # L2-normalised [2, 512]
    images = model.embed("image", ["cat.png", pil_image])
    chat = sensorium.load("decoder")                       # packaged language decoder
    chat.chat([{"role": "user", "content": [{"type": "image", "image": "scene.png"},
                                            {"type": "text", "text": "What shape is the red object?"}]}])
    index, _ = sensorium.build_index("default", "my-index", ["data/clipart/test"])   # any modality, persistent
    hits = sensorium.search(sensorium.Index.open("my-index"), "a red apple", k=5, modality="image")
"""

from __future__ import annotations

from sensorium.index import Hit, Index, search
from sensorium.index import build as build_index
from sensorium.inference import ChatModel, ChatResult, Embedder, ItemError, list_models, load

__all__ = ["ChatModel", "ChatResult", "Embedder", "Hit", "Index", "ItemError", "build_index", "list_models", "load",
           "search"]
