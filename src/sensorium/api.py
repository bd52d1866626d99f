"""The Python front door. Everything here is the library's own implementation, the same one the CLI and the
server call:

    import sensorium
    model = sensorium.load("default")                      # packaged composer: image, text, speech
    vectors = model.embed("text", ["a red circle", "a dog"])   # L2-normalised [2, 512]
    images = model.embed("image", ["cat.png", pil_image])
    chat = sensorium.load("decoder")                       # packaged language decoder
    chat.chat([{"role": "user", "content": [{"type": "image", "image": "scene.png"},
                                            {"type": "text", "text": "What shape is the red object?"}]}])
"""

from __future__ import annotations

from sensorium.inference import ChatModel, ChatResult, Embedder, ItemError, list_models, load

__all__ = ["ChatModel", "ChatResult", "Embedder", "ItemError", "list_models", "load"]
