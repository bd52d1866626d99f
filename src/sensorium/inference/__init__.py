"""Loaded models behind one interface, for every door (Python API, CLI, server, benchmarks): `load` a packaged
name, a run or a checkpoint directory; embedding models `embed(modality, items)`, language decoders
`chat(messages)`."""

from sensorium.inference.chat import ChatModel, ChatResult, generation_config, to_conversation
from sensorium.inference.embedders import AlignedEmbedder, DualEncoderEmbedder, Embedder, UnifiedEmbedder
from sensorium.inference.items import ItemError, to_value, to_values
from sensorium.inference.load import PACKAGED, list_models, load

__all__ = ["AlignedEmbedder", "ChatModel", "ChatResult", "DualEncoderEmbedder", "Embedder", "ItemError", "PACKAGED",
           "UnifiedEmbedder", "generation_config", "list_models", "load", "to_conversation", "to_value", "to_values"]
